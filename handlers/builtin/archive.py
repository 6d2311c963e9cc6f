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
written last, and readers trust a folder only when it is there and matches.

Concurrent writers (a duplicate run, a run that lost its lease while its save still runs, the
reaper's archiver outside the worker's lanes, two deployments on one bucket) have no
compare-and-swap to lean on, so `save` re-checks instead: after its objects it re-reads the
marker before writing its own, never writes one for a turn lower than the one there, makes
`result.json` equal to its turn's `turns/` file byte for byte, and re-checks after every marker
write (a few rounds). A save returns only once it has seen, after its own last write, the
folder whole at its turn or later; a writer that finds a later turn's objects replaced by an
earlier turn's (its own, from a stale read) raises `ArchiveRaced` and leaves the folder
unarchived. Two writers of one session, whatever the interleaving of their calls, so end with
the folder whole at the later turn, or not complete with one run failed, whose retry reads the
session afresh (`ctx.reread()`, on `ArchiveRaced` at once and on every retry) and completes it
(tests/handlers/test_archive_store.py tries every order switching within 24 store calls).

What remains without compare-and-swap: a writer that dies (killed, not raising) after replacing
another's objects leaves the folder unarchived while the other run has succeeded and recorded
the save; a worker run is re-run when its lease lapses, the reaper's archiver is not, and the
folder stays unarchived (never trusted wrongly) until the session's next archive. Three or more
writers at once can, rarely, end with an earlier turn whole under an all-successful set of runs
(a check-then-write window each). Stores are assumed to read their latest write (S3, GCS and
filesystems do).
"""

import asyncio
import json
import re
from collections.abc import Callable, Iterable
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
    # hide_input_in_errors: a URL refused for its password must not be quoted back (pydantic's
    # errors carry `input_value`; wiring.archiver validates this table directly, no registry).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

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
    """Another writer changed the folder while this one wrote it, and this writer cannot leave it
    whole: the folder stays unarchived (no matching marker) and the run fails, to be retried
    with a fresh read of the session."""


# How many times one save re-checks the folder and rewrites its marker (or its objects) before
# it gives up with ArchiveRaced: two writers settle in two or three; more means a third writer.
ROUNDS = 4


def save(store: ArchiveStore, session_id: str, turn: int, events: list[str], result: str) -> bool:
    """Write the session's folder; False when a later turn is archived there (only this turn's
    own result file was written). Returns only once the folder was seen whole at this turn or a
    later one; else raises ArchiveRaced. Blocking: run it in a thread."""
    transcript = "".join(events).encode("utf-8")
    text = result.encode("utf-8")
    own = f"{session_id}/{turn_key(turn)}"

    def put() -> None:
        store.write(f"{session_id}/events.jsonl", transcript)
        # The turn's own copy first: result.json, the latest, never runs ahead of its turn file.
        store.write(own, text)
        store.write(f"{session_id}/result.json", text)

    if not store.marked:
        put()
        return True
    existing = read_marker(store, session_id)
    if existing is not None and existing.turn > turn:
        store.write(own, text)  # never in a later turn's marker: it cannot unmake that folder
        return _seal(store, session_id, turn, None, None)
    put()
    files = {"events.jsonl": len(transcript), turn_key(turn): len(text), "result.json": len(text)}
    return _seal(store, session_id, turn, Marker(session_id, turn, len(events), files), put)


def _seal(
    store: ArchiveStore,
    session_id: str,
    turn: int,
    ours: Marker | None,
    put: Callable[[], None] | None,
) -> bool:
    """Write the marker and re-check until the folder is whole at `turn` or later (True: at
    `turn`); ArchiveRaced when it cannot be. `ours` describes what this writer just put (None:
    it put nothing but its turn file); `put` puts it again.

    Each round reads the marker right before writing one, and never writes one for a turn lower
    than it (nor lower than `turn`): a folder only moves forward. Whoever writes last re-checks
    after every other write, so a run that returns has seen the folder's final state whole."""
    key = f"{session_id}/{MARKER}"
    candidate: Marker | None = ours
    for round_ in range(ROUNDS + 1):
        current = read_marker(store, session_id)
        if current is not None and current.turn >= turn and whole(store, current):
            return current.turn == turn
        if round_ == ROUNDS:
            break
        floor = max(turn, -1 if current is None else current.turn)
        if candidate is None or candidate.turn < floor:
            candidate = describe(store, session_id)
            if candidate is None:
                raise ArchiveRaced(f"{session_id}: another writer of the folder has not finished")
        if candidate.turn < floor:
            if put is None or (current is not None and current.turn > turn):
                # A later turn's objects were replaced by an earlier one's (ours, or a late
                # writer's) and this run has not got them: its retry, reading afresh, has.
                raise ArchiveRaced(f"{session_id}: archive folder fell behind its marker")
            put()  # an earlier turn's writer replaced this one's objects: put them back
            candidate = ours
            continue
        store.write(key, candidate.encode())
        candidate = None  # from here on, describe what is there
    raise ArchiveRaced(f"{session_id}: archive folder still changing after {ROUNDS} rounds")


def whole(store: ArchiveStore, marker: Marker) -> bool:
    """`marker` matches the folder, and result.json is its turn's own result byte for byte."""
    if not matches(store, marker):
        return False
    latest = store.read(f"{marker.session_id}/result.json")
    return latest is not None and latest == store.read(
        f"{marker.session_id}/{turn_key(marker.turn)}"
    )


def describe(store: ArchiveStore, session_id: str) -> Marker | None:
    """The marker for the folder as it stands: the turn its transcript has reached, that turn's
    result file, and result.json made equal to it (rewritten from it when not). None: the
    transcript or that turn's result is missing (a writer has not finished)."""
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
    result = store.read(f"{session_id}/{turn_key(turn)}")
    if result is None:
        return None
    if store.read(f"{session_id}/result.json") != result:
        store.write(f"{session_id}/result.json", result)
    files = {"events.jsonl": len(data), turn_key(turn): len(result), "result.json": len(result)}
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
        store = self.store(ctx.config.results_dir)
        if ctx.attempt > 1 and store.marked:
            # A retry on a URL store reads afresh: the delivery's shared read may be the very
            # transcript that lost a race (ArchiveRaced) to a later turn's, and would lose it
            # again. The local directory has no race to lose: its retry keeps the shared read
            # (two API calls fewer).
            ctx.reread()
        try:
            await self._save(ctx, store)
        except ArchiveRaced as raced:
            # Once more at once, on a fresh read (the reaper's archiver has no retry of its
            # own); raced again, the run fails and the worker retries it later.
            ctx.log.info("archive.raced", reason=str(raced))
            ctx.reread()
            await self._save(ctx, store)

    async def _save(self, ctx: HandlerContext, store: ArchiveStore) -> None:
        session_id = ctx.session_id
        result = await ctx.result(files=self.config.list_files)
        events = await ctx.events()
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
