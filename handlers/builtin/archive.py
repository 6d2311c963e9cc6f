"""`archive`: the transcript (`events.jsonl`, every event as the API returned it, in order) and
`result.json`, under `<results_dir>/<session_id>/`.

`result.json` lists the files the session produced only with `[archive] list_files = true` (one
more API call per result); otherwise its `files` is null: not listed, not "none". Its table
(`ArchiveConfig`) comes from `results_dir` and `[archive]` (handlers/plugin_config.py).

A session that takes follow-ups rests more than once, and each rest is archived: `events.jsonl`
always holds the whole transcript and `result.json` the latest result, and every result is also
kept as `turns/<n>-result.json`, n counting the session's rests (idles and terminations) so far,
so a later turn's archive never loses an earlier turn's result.

Idempotent: each file is written to a temporary name and renamed over the old one, so a rerun
rewrites the same content and a crash never leaves half a file.
"""

import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from handlers.api import BetaManagedAgentsSessionEvent, HandlerContext, PermanentError

# Session ids become directory names: nothing that could climb out of results_dir.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")
# The status events a session rests on: one per turn it took, follow-ups included.
RESTS = ("session.status_idle", "session.status_terminated")


class ArchiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    results_dir: Path | None = None  # None: the shared `results_dir` (ctx.config)
    list_files: bool = False


def turn_number(events: Iterable[BetaManagedAgentsSessionEvent]) -> int:
    """How many times the session has come to rest in this transcript: the latest turn's n."""
    return sum(1 for e in events if getattr(e, "type", None) in RESTS)


def turn_result_path(folder: Path, turn: int) -> Path:
    return folder / "turns" / f"{turn:04d}-result.json"


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArchiveHandler:
    name = "archive"
    reads_only = True  # never wakes the session (handlers/builtin/delete.py relies on it)

    Config = ArchiveConfig

    def __init__(self, config: ArchiveConfig | None = None) -> None:
        self.config = config or ArchiveConfig()

    async def handle(self, ctx: HandlerContext) -> None:
        session_id = ctx.session_id
        if not _SAFE_ID.match(session_id):
            raise PermanentError(f"session id unsafe as a directory name: {session_id!r}")
        result = await ctx.result(files=self.config.list_files)
        events = await ctx.events()
        folder = (self.config.results_dir or ctx.config.results_dir) / session_id
        write_atomic(
            folder / "events.jsonl",
            (json.dumps(e.to_dict(mode="json"), ensure_ascii=False) + "\n" for e in events),
        )
        text = json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        # The turn's own copy first: result.json, the latest, never runs ahead of its turn file.
        write_atomic(turn_result_path(folder, turn_number(events)), [text])
        write_atomic(folder / "result.json", [text])
        await ctx.record_saved(result)
        ctx.log.info("archive.written", path=str(folder), events=len(events))
