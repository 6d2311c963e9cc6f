"""One session, everything idlehook knows of it: `idlehook show` and the session page render this.

The store's part is `store.session_detail`; around it, the archive (`<results_dir>/<id>/`, or
`<[archive] url>/<id>/` on an object store, as the `archive` plugin writes it) and at most two
paced API reads, each made only when asked for and said in `api_reads`: the session itself
(live status, usage and the model its tokens went to; also how a session the store never heard
of is found), and one page of its latest events when no transcript was archived. A deleted
session is never read: the API would answer 404.
"""

import asyncio
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
from sqlalchemy.engine import Engine

from handlers.billing import Pricing, session_cost, token_usd
from handlers.builtin.archive import _SAFE_ID, RESTS
from handlers.builtin.archive_store import ArchiveStore, LocalStore, complete
from handlers.spend import cap_from_metadata
from sessions.metadata import RESERVED_PREFIX
from sessions.tracked_view import status_label, user_metadata
from store import session_detail
from store.session_detail import SessionDetail

SUMMARY_CHARS = 200  # of a message in the transcript summary (the archive keeps it whole)


@dataclass(frozen=True)
class EventLine:
    type: str
    processed_at: str | None
    id: str | None
    summary: str


@dataclass(frozen=True)
class Transcript:
    source: str  # "archive" (events.jsonl, no call) | "api" (one page of the latest events)
    events: int  # in the archive: all of them; from the API: the page read
    complete: bool  # False: the API has older events than the page read
    by_type: dict[str, int]
    turns: int  # rests (idle or terminated) in it
    stop_reason: str | None
    final_message: str | None
    latest: list[EventLine]


@dataclass(frozen=True)
class Archive:
    path: str  # the folder: a local path, or a URL (`[archive] url`)
    result_json: bool
    events_jsonl: bool
    turn_results: int  # turns/<n>-result.json files
    # A URL store's folder counts only once its marker is there and matches (written last):
    # True/False there; None on the local directory, which keeps no marker.
    complete: bool | None = None

    @classmethod
    def at(cls, store: "ArchiveStore | Path", session_id: str) -> "Archive":
        """What the archive holds of the session. Blocking (a remote store is read)."""
        if isinstance(store, Path):
            store = LocalStore(store)
        keys = store.keys(session_id)
        count = sum(
            1 for k in keys if k.startswith(f"{session_id}/turns/") and k.endswith("-result.json")
        )
        whole: bool | None = None
        if store.marked:
            # Files without their marker are a write under way, or one that crashed: not yet.
            whole = complete(store, session_id) is not None
        return cls(
            store.address(session_id),
            f"{session_id}/result.json" in keys and whole is not False,
            f"{session_id}/events.jsonl" in keys and whole is not False,
            count,
            whole,
        )


@dataclass(frozen=True)
class ModelCost:
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cache_read_input_tokens: int | None
    cache_creation_input_tokens: int | None
    token_usd: float | None


@dataclass(frozen=True)
class Cost:
    billing_model: str
    runtime_seconds: float | None
    runtime_usd: float | None
    token_usd: float | None
    total_usd: float | None
    budget_usd: float | None
    source: str  # "api" (read now) | "store" (as last recorded)
    by_model: list[ModelCost] = field(default_factory=list)


@dataclass(frozen=True)
class SessionReport:
    session_id: str
    detail: SessionDetail
    status: str | None
    stop_reason: str | None
    metadata: dict[str, str]  # every pair, idlehook's included
    agent_id: str | None
    agent_version: int | None
    title: str | None
    created_at: datetime | None
    updated_at: datetime | None
    deleted_at: datetime | None
    cost: Cost
    archive: Archive | None
    transcript: Transcript | None
    api_reads: list[str]  # which reads were made: "session", "events"
    notes: list[str]  # what could not be known, and why
    found: bool  # in the store or the API

    @property
    def status_label(self) -> str:
        return status_label(self.status, self.stop_reason)

    def to_json(self) -> dict[str, Any]:
        d = self.detail
        t = d.tracked
        body: dict[str, Any] = _plain(
            {
                "id": self.session_id,
                "found": self.found,
                "tracked": t is not None,
                "status": self.status,
                "stop_reason": self.stop_reason,
                "status_label": self.status_label,
                "title": self.title,
                "metadata": self.metadata,
                "user_metadata": user_metadata(self.metadata),
                "owner": t.owner if t else self.metadata.get(RESERVED_PREFIX + "owner"),
                "launched_by_us": t.launched_by_us if t else False,
                "route": t.route if t else self.metadata.get(RESERVED_PREFIX + "route"),
                "agent_id": self.agent_id,
                "agent_version": self.agent_version,
                "environment_id": t.environment_id if t else None,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "first_seen_at": t.first_seen_at if t else None,
                "status_at": t.status_at if t else None,
                "deleted_at": self.deleted_at,
                "deadline": t.deadline if t else None,
                "interrupted_at": t.interrupted_at if t else None,
                "interrupt_reason": t.interrupt_reason if t else None,
                "reap_requested_at": t.reap_requested_at if t else None,
                "result_captured_at": t.result_captured_at if t else None,
                "transcript_saved_at": t.transcript_saved_at if t else None,
                "cost": self.cost,
                "archive": self.archive,
                "launch": d.launch,
                "deliveries": [{**_plain(x), "routing": x.routing} for x in d.deliveries],
                "handler_runs": d.runs,
                "approvals": d.approvals,
                "tool_calls": d.tool_calls,
                "follow_ups": d.follow_ups,
                "reaper_actions": d.reaper_actions,
                "transcript": self.transcript,
                "api_reads": self.api_reads,
                "notes": self.notes,
            }
        )
        return body


def _plain(value: Any) -> Any:
    """Dataclasses, datetimes and models as JSON-ready values."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# -- the transcript -------------------------------------------------------------------------


def _text(event: Mapping[str, Any]) -> str:
    blocks = event.get("content") or []
    texts = [
        b.get("text") or "" for b in blocks if isinstance(b, Mapping) and b.get("type") == "text"
    ]
    return " ".join(" ".join(texts).split())


def _summary(event: Mapping[str, Any]) -> str:
    kind = str(event.get("type"))
    if kind in ("agent.message", "user.message"):
        text = _text(event)
        return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
    if kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
        return str(event.get("name") or "")
    if kind == "session.status_idle":
        reason = event.get("stop_reason")
        return str(reason.get("type")) if isinstance(reason, Mapping) else ""
    if kind == "session.error":
        error = event.get("error")
        return str(error.get("message") or error.get("type")) if isinstance(error, Mapping) else ""
    if kind == "user.tool_confirmation":
        return str(event.get("result") or "")
    return ""


def summarise(
    events: Sequence[Mapping[str, Any]], *, source: str, complete: bool, latest: int
) -> Transcript:
    stop_reason = None
    final = None
    for event in reversed(events):
        if stop_reason is None and event.get("type") == "session.status_idle":
            reason = event.get("stop_reason")
            stop_reason = str(reason.get("type")) if isinstance(reason, Mapping) else None
        if final is None and event.get("type") == "agent.message":
            final = _text(event)
    tail = list(events)[-latest:] if latest > 0 else []
    return Transcript(
        source=source,
        events=len(events),
        complete=complete,
        by_type=dict(sorted(Counter(str(e.get("type")) for e in events).items())),
        turns=sum(1 for e in events if e.get("type") in RESTS),
        stop_reason=stop_reason,
        final_message=final,
        latest=[
            EventLine(
                type=str(e.get("type")),
                processed_at=str(e["processed_at"]) if e.get("processed_at") else None,
                id=str(e["id"]) if e.get("id") else None,
                summary=_summary(e),
            )
            for e in tail
        ],
    )


def read_archived_events(
    path: Path, store: ArchiveStore | None = None
) -> list[dict[str, Any]] | None:
    """events.jsonl as written by `archive` (`path`: its key in `store`, else a local file);
    None when absent or unreadable."""
    try:
        if store is None:
            lines = path.read_text(encoding="utf-8").splitlines()
        else:
            data = store.read(path.as_posix())
            if data is None:
                return None
            lines = data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    events = []
    for line in lines:
        if line.strip():
            try:
                events.append(json.loads(line))
            except ValueError:
                return None
    return events


# -- assembling ------------------------------------------------------------------------------


def _model_costs(api_session: Any) -> list[ModelCost]:
    """The session's tokens under the model its agent ran on: the API's usage is per session,
    and the session's agent snapshot names one model."""
    usage = getattr(api_session, "usage", None)
    agent = getattr(api_session, "agent", None)
    model = getattr(getattr(agent, "model", None), "id", None)
    if usage is None or model is None:
        return []
    cache = getattr(usage, "cache_creation", None)
    created = None
    if cache is not None:
        parts = [v for v in cache.to_dict().values() if isinstance(v, int)]
        created = sum(parts) if parts else None
    return [
        ModelCost(
            model=str(model),
            input_tokens=getattr(usage, "input_tokens", None),
            output_tokens=getattr(usage, "output_tokens", None),
            cache_read_input_tokens=getattr(usage, "cache_read_input_tokens", None),
            cache_creation_input_tokens=created,
            token_usd=token_usd(usage),
        )
    ]


def _stored_cost(detail: SessionDetail, pricing: Pricing) -> Cost:
    t = detail.tracked
    seconds = t.active_seconds if t else None
    tokens = t.token_usd if t else None
    total = t.cost_usd if t else None
    runtime = None
    if total is not None:
        runtime = round(total - (tokens or 0.0), 6)
    elif seconds is not None and pricing.model == "running":
        runtime = round(pricing.runtime_usd(seconds), 6)
    return Cost(
        billing_model=pricing.model,
        runtime_seconds=seconds,
        runtime_usd=runtime,
        token_usd=tokens,
        total_usd=total,
        budget_usd=cap_from_metadata(t.session_metadata) if t else None,
        source="store",
    )


async def build(
    engine: Engine,
    session_id: str,
    *,
    results_dir: Path | ArchiveStore,
    pricing: Pricing,
    client: anthropic.AsyncAnthropic | None,
    latest: int = 10,
) -> SessionReport:
    """`client` None: the store and the archive only (`--no-api`, and the web page).
    `results_dir`: the local archive, or the archive's store (`archive_store.open_store`)."""
    detail = await asyncio.to_thread(session_detail.load, engine, session_id)
    t = detail.tracked
    reads: list[str] = []
    notes: list[str] = []
    deleted = t.deleted_at if t else None
    api_session: Any = None
    if client is not None and deleted is None:
        reads.append("session")
        try:
            api_session = await client.beta.sessions.retrieve(session_id)
        except anthropic.NotFoundError:
            notes.append("the API has no such session (deleted, or never existed)")
        except anthropic.APIError as exc:
            notes.append(f"the API read of the session failed: {type(exc).__name__}")
    elif client is None and t is None:
        notes.append("not in the store, and no API read was allowed")
    found = t is not None or detail.known or api_session is not None

    store = LocalStore(results_dir) if isinstance(results_dir, Path) else results_dir
    archive = None
    if _safe(session_id):
        archive = await asyncio.to_thread(Archive.at, store, session_id)
    transcript: Transcript | None = None
    if archive is not None and archive.events_jsonl:
        key = Path(session_id) / "events.jsonl"
        events = await asyncio.to_thread(read_archived_events, key, store)
        if events is not None:
            transcript = summarise(events, source="archive", complete=True, latest=latest)
    if transcript is None and client is not None and api_session is not None:
        reads.append("events")
        try:
            page = await client.beta.sessions.events.list(
                session_id, order="desc", limit=min(max(latest, 20), 100)
            )
            events = [e.to_dict(mode="json") for e in reversed(page.data)]
            transcript = summarise(
                events, source="api", complete=not page.has_next_page(), latest=latest
            )
        except anthropic.APIError as exc:
            notes.append(f"the API read of the events failed: {type(exc).__name__}")
    if transcript is None:
        if deleted is not None:
            notes.append("no transcript: the session is deleted and none was archived")
        elif client is None:
            notes.append("no transcript archived (the API was not read)")

    metadata = dict(t.session_metadata) if t else {}
    cost = _stored_cost(detail, pricing)
    status = t.status if t else None
    stop_reason = t.stop_reason if t else None
    if api_session is not None:
        metadata = {str(k): str(v) for k, v in (api_session.metadata or {}).items()}
        live = session_cost(api_session, pricing)
        cost = Cost(
            billing_model=pricing.model,
            runtime_seconds=live.runtime_seconds,
            runtime_usd=live.runtime_usd,
            token_usd=live.token_usd,
            total_usd=live.total_usd,
            budget_usd=cap_from_metadata(metadata),
            source="api",
            by_model=_model_costs(api_session),
        )
        status = api_session.status
        if status != "idle":
            stop_reason = None
    # A transcript read now is newer than the recorded stop reason; an archived one older.
    fresher = transcript is not None and (transcript.source == "api" or stop_reason is None)
    if status == "idle" and transcript is not None and transcript.stop_reason and fresher:
        stop_reason = transcript.stop_reason
    agent = getattr(api_session, "agent", None)
    return SessionReport(
        session_id=session_id,
        detail=detail,
        status=status,
        stop_reason=stop_reason,
        metadata=metadata,
        agent_id=getattr(agent, "id", None) or (t.agent_id if t else None),
        agent_version=getattr(agent, "version", None) or (t.agent_version if t else None),
        title=getattr(api_session, "title", None) or (t.title if t else None),
        created_at=getattr(api_session, "created_at", None) or (t.created_at if t else None),
        updated_at=getattr(api_session, "updated_at", None) or (t.updated_at if t else None),
        deleted_at=deleted,
        cost=cost,
        archive=archive,
        transcript=transcript,
        api_reads=reads,
        notes=notes,
        found=found,
    )


def _safe(session_id: str) -> bool:
    # The archive's own rule for a directory name: nothing that could climb out of results_dir.
    return bool(_SAFE_ID.match(session_id))
