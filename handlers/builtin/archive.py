"""`archive`: the transcript (`events.jsonl`, every event as the API returned it, in order) and
`result.json`, under `<results_dir>/<session_id>/`, or `<url>/<session_id>/` with `[archive] url`
(any fsspec URL: `s3://bucket/prefix`, `gs://...`, `file:///abs/path`; archive_store.py).

`result.json` lists the files the session produced only with `[archive] list_files = true` (one
more API call per result); otherwise its `files` is null: not listed, not "none". Its table
(`ArchiveConfig`) comes from `results_dir` and `[archive]` (handlers/plugin_config.py).

A session that takes follow-ups rests more than once, and each rest is archived: `events.jsonl`
always holds the whole transcript and `result.json` the latest result, and every result is also
kept as `turns/<n>-result.json`, n counting the session's rests (idles and terminations) so far,
so a later turn's archive never loses an earlier turn's result.

Idempotent: each object is written whole (renamed into place on a filesystem, one PUT on an
object store), so a rerun rewrites the same content and a crash never leaves half a file. On a
URL store the marker `_COMPLETE.json` (the turn, the event count, each file and its size) is
written last, and readers trust a folder only when it is there and matches; a folder whose
marker names a later turn keeps its files (only this turn's own `turns/` copy is written), so
a late or duplicate run never rolls the folder back.
"""

import asyncio
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from handlers.api import BetaManagedAgentsSessionEvent, HandlerContext, PermanentError
from handlers.builtin.archive_store import (
    MARKER,
    ArchiveStore,
    Marker,
    matches,
    open_store,
    read_marker,
)

# Session ids become directory names: nothing that could climb out of results_dir.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")
# The status events a session rests on: one per turn it took, follow-ups included.
RESTS = ("session.status_idle", "session.status_terminated")


class ArchiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    results_dir: Path | None = None  # None: the shared `results_dir` (ctx.config)
    list_files: bool = False
    # Any fsspec URL; None: `results_dir`. Credentials never go in it (check_url refuses a
    # password): the backend's environment (AWS_*), or `storage_options`, which is never logged.
    url: str | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is not None and urlsplit(value).password:
            raise ValueError("no password in the URL (use the environment or storage_options)")
        return value


def turn_number(events: Iterable[BetaManagedAgentsSessionEvent]) -> int:
    """How many times the session has come to rest in this transcript: the latest turn's n."""
    return sum(1 for e in events if getattr(e, "type", None) in RESTS)


def turn_result_path(folder: Path, turn: int) -> Path:
    return folder / "turns" / f"{turn:04d}-result.json"


def turn_key(turn: int) -> str:
    return f"turns/{turn:04d}-result.json"


class ArchiveRaced(RuntimeError):
    """Another writer changed the folder between our objects and our marker, and the folder
    cannot be described whole yet."""


def save(store: ArchiveStore, session_id: str, turn: int, events: list[str], result: str) -> bool:
    """Write the session's folder; False when a later turn is archived there already (only this
    turn's own result file was written). Blocking: run it in a thread."""
    transcript = "".join(events).encode("utf-8")
    text = result.encode("utf-8")
    own = f"{session_id}/{turn_key(turn)}"
    if store.marked:
        existing = read_marker(store, session_id)
        if existing is not None and existing.turn > turn:
            store.write(own, text)
            return False
    store.write(f"{session_id}/events.jsonl", transcript)
    # The turn's own copy first: result.json, the latest, never runs ahead of its turn file.
    store.write(own, text)
    store.write(f"{session_id}/result.json", text)
    if store.marked:
        files = {
            "events.jsonl": len(transcript),
            turn_key(turn): len(text),
            "result.json": len(text),
        }
        marker = Marker(session_id, turn, len(events), files)
        store.write(f"{session_id}/{MARKER}", marker.encode())
        if not matches(store, marker):
            # Another worker wrote this folder meanwhile (a duplicate run, the reaper): describe
            # what is there now, which every writer that looks derives the same way.
            rebuilt = describe(store, session_id)
            if rebuilt is None:
                # Its other writer is not done: the folder stays unarchived, and the run's
                # retry (raising retries it) finds it whole.
                raise ArchiveRaced(f"{session_id}: archive folder changed while written")
            store.write(f"{session_id}/{MARKER}", rebuilt.encode())
    return True


def describe(store: ArchiveStore, session_id: str) -> Marker | None:
    """The marker for the folder as it stands (None: its transcript or results are missing)."""
    data = store.read(f"{session_id}/events.jsonl")
    if data is None:
        return None
    lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    turn = 0
    for line in lines:
        try:
            turn += json.loads(line).get("type") in RESTS
        except (ValueError, AttributeError):
            return None
    files = {"events.jsonl": len(data)}
    for name in (turn_key(turn), "result.json"):
        size = store.size(f"{session_id}/{name}")
        if size is None:
            return None
        files[name] = size
    return Marker(session_id, turn, len(lines), files)


class ArchiveHandler:
    name = "archive"
    reads_only = True  # never wakes the session (handlers/builtin/delete.py relies on it)

    Config = ArchiveConfig

    def __init__(self, config: ArchiveConfig | None = None) -> None:
        self.config = config or ArchiveConfig()
        self._stores: dict[Path, ArchiveStore] = {}

    def store(self, results_dir: Path) -> ArchiveStore:
        """The configured store (one per process: an fsspec filesystem keeps its connections)."""
        root = self.config.results_dir or results_dir
        if root not in self._stores:
            self._stores[root] = open_store(root, self.config.url, self.config.storage_options)
        return self._stores[root]

    async def handle(self, ctx: HandlerContext) -> None:
        session_id = ctx.session_id
        if not _SAFE_ID.match(session_id):
            raise PermanentError(f"session id unsafe as a directory name: {session_id!r}")
        result = await ctx.result(files=self.config.list_files)
        events = await ctx.events()
        store = self.store(ctx.config.results_dir)
        lines = [json.dumps(e.to_dict(mode="json"), ensure_ascii=False) + "\n" for e in events]
        text = json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        turn = turn_number(events)
        # fsspec's calls block (an S3 PUT, a disk fsync): never on the worker's event loop.
        latest = await asyncio.to_thread(save, store, session_id, turn, lines, text)
        await ctx.record_saved(result)
        ctx.log.info(
            "archive.written",
            path=store.address(session_id),
            events=len(events),
            turn=turn,
            **({} if latest else {"kept_later_turn": True}),
        )
