"""`GET /sessions/{id}/view`: one session on the operator page, what `idlehook show` prints.

Behind the page's token (console/auth.py), read-only, and from the store and the archive alone:
a page load never spends the API's rate budget (`idlehook show` reads the API when asked).
"""

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from console import auth, web, web_page
from handlers.billing import Pricing
from handlers.builtin.archive_store import ArchiveStore
from sessions.session_report import SessionReport, build
from sessions.tracked_view import user_metadata

_MAX_ID = 200  # the store's longest session id
_STYLE = ".facts{width:auto}.facts th{white-space:nowrap}code{word-break:break-all}"


def session_routes(
    engine: Engine,
    api_token: SecretStr | None,
    *,
    results_dir: Path | ArchiveStore,
    pricing: Pricing,
) -> list[Route]:
    token = api_token if auth.configured(api_token) else None

    async def view(request: Request) -> Response:
        if token is None:
            return _html(lambda n: web_page.message_page("idlehook", "no token set", n), 503)
        if not auth.authorised(request, token):
            return RedirectResponse("/login", status_code=303)
        session_id = request.path_params["session_id"]
        if not 0 < len(session_id) <= _MAX_ID:
            return _html(lambda n: web_page.message_page("idlehook", "no such session", n), 404)
        report = await build(
            engine, session_id, results_dir=results_dir, pricing=pricing, client=None, latest=20
        )
        if not report.found:
            message = f"idlehook knows nothing of {session_id}."
            return _html(lambda n: web_page.message_page("idlehook", message, n), 404)
        return _html(lambda n: render(report, n))

    return [Route("/sessions/{session_id}/view", view, methods=["GET"])]


def _html(page: Callable[[str], str], status: int = 200) -> HTMLResponse:
    return web._page(page, status)  # the page's CSP, nonce and no-store headers


def _ts(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return web_page._ts(value)
    return escape(str(value)[:19].replace("T", " "))


def _dl(items: Iterable[tuple[str, str]]) -> str:
    """Pairs whose values are already HTML."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in items if v)
    return f'<table class="facts">{rows}</table>'


def _code(text: str | None) -> str:
    return f"<code>{escape(text)}</code>" if text else ""


def _section(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    return f"<h2>{escape(title)}</h2>" + web_page._table(headers, rows, "None.")


def render(report: SessionReport, nonce: str) -> str:
    d = report.detail
    t = d.tracked
    c = report.cost
    runtime = f"{c.runtime_seconds:.0f}s running" if c.runtime_seconds is not None else ""
    a = report.archive
    facts = [
        (
            "status",
            web_page._state(report.status)
            + escape(
                f" ({report.stop_reason})" if report.status == "idle" and report.stop_reason else ""
            ),
        ),
        ("title", escape(report.title or "")),
        ("owner", escape((t.owner if t else None) or "")),
        ("route", escape((t.route if t else None) or "")),
        ("launched by idlehook", "yes" if t and t.launched_by_us else "no"),
        (
            "agent",
            _code(report.agent_id)
            + (f" v{report.agent_version}" if report.agent_version is not None else ""),
        ),
        ("environment", _code(t.environment_id if t else None)),
        (
            "metadata",
            " ".join(_code(f"{k}={v}") for k, v in user_metadata(report.metadata).items()),
        ),
        ("created", _ts(report.created_at)),
        ("updated", _ts(report.updated_at)),
        ("status at", _ts(t.status_at if t else None)),
        ("deleted", _ts(report.deleted_at)),
        ("deadline", _ts(t.deadline if t else None)),
        (
            "interrupted",
            _ts(t.interrupted_at if t else None)
            + escape(f" ({t.interrupt_reason})" if t and t.interrupt_reason else ""),
        ),
        ("reap requested", _ts(t.reap_requested_at if t else None)),
        ("result saved", _ts(t.result_captured_at if t else None)),
        (
            "cost",
            escape(
                f"{web_page._money(c.total_usd) or '?'}: "
                f"runtime {web_page._money(c.runtime_usd) or '?'}"
                f" {runtime}, tokens {web_page._money(c.token_usd) or '?'} "
                f"(billing {c.billing_model}, as last recorded)"
            ),
        ),
        ("budget", escape(web_page._money(c.budget_usd))),
        (
            "archive",
            ""
            if a is None
            else _code(a.path)
            + escape(
                f" result.json {'yes' if a.result_json else 'no'}, "
                f"events.jsonl {'yes' if a.events_jsonl else 'no'}, {a.turn_results} turn results"
            ),
        ),
        (
            "launch",
            ""
            if d.launch is None
            else escape(f"{d.launch.id}: {d.launch.state} after {d.launch.attempts} attempt(s)")
            + " "
            + _code(d.launch.idempotency_key),
        ),
    ]
    parts = [
        f"<h1><code>{escape(report.session_id)}</code></h1>",
        '<p><a href="/">back to the page</a></p>',
        _dl(facts),
        "".join(f'<p class="muted">{escape(n)}</p>' for n in report.notes),
        _section(
            "Deliveries",
            ["event", "type", "source", "received", "duplicates", "routing"],
            (
                [
                    _code(x.event_id),
                    escape(x.event_type),
                    escape(x.source),
                    _ts(x.received_at),
                    str(x.duplicates or ""),
                    escape(x.routing),
                ]
                for x in d.deliveries
            ),
        ),
        _section(
            "Handler runs",
            ["run", "event", "handler", "state", "attempts", "error"],
            (
                [
                    str(r.id),
                    _code(r.event_id),
                    escape(r.handler),
                    web_page._state(r.state),
                    str(r.attempts),
                    escape(r.last_error or ""),
                ]
                for r in d.runs
            ),
        ),
        _section(
            "Approvals",
            ["id", "tool use", "tool", "state", "decision", "by", "requested"],
            (
                [
                    str(p.id),
                    _code(p.tool_use_id),
                    escape(p.tool_name),
                    escape(p.state),
                    escape(p.decision or ""),
                    escape(p.decided_by or ""),
                    _ts(p.requested_at),
                ]
                for p in d.approvals
            ),
        ),
        _section(
            "Tool calls",
            ["tool use", "tool", "state", "attempts", "error", "sent"],
            (
                [
                    _code(x.custom_tool_use_id),
                    escape(x.tool_name),
                    escape(x.state),
                    str(x.attempts),
                    "yes" if x.is_error else "",
                    _ts(x.sent_at),
                ]
                for x in d.tool_calls
            ),
        ),
        _section(
            "Follow-ups",
            ["key", "state", "attempts", "sent", "event", "error"],
            (
                [
                    _code(f.idempotency_key),
                    escape(f.state),
                    str(f.attempts),
                    _ts(f.sent_at),
                    _code(f.event_id),
                    escape(f.error or ""),
                ]
                for f in d.follow_ups
            ),
        ),
        _section(
            "Reaper actions",
            ["at", "action", "reason", "dry run", "error"],
            (
                [
                    _ts(x.at),
                    escape(x.action),
                    escape(x.reason),
                    "yes" if x.dry_run else "",
                    escape(x.error or ""),
                ]
                for x in d.reaper_actions
            ),
        ),
    ]
    tr = report.transcript
    if tr is not None:
        counts = ", ".join(f"{n} {kind}" for kind, n in tr.by_type.items())
        parts.append(
            f"<h2>Transcript</h2><p>{tr.events} events from the archived events.jsonl, "
            f"{tr.turns} turn(s): {escape(counts)}</p>"
        )
        if tr.final_message:
            parts.append(f"<p>final message: {escape(tr.final_message)}</p>")
        parts.append(
            web_page._table(
                ["processed", "type", "summary", "event"],
                (
                    [_ts(e.processed_at), escape(e.type), escape(e.summary), _code(e.id)]
                    for e in tr.latest
                ),
                "No events.",
            )
        )
    else:
        parts.append(
            '<h2>Transcript</h2><p class="muted">Not archived. '
            f"<code>idlehook show {escape(report.session_id)}</code> reads it from the API.</p>"
        )
    title = escape(f"idlehook: {report.session_id}")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{title}</title><link rel="icon" href="data:,">'
        f'<style nonce="{escape(nonce)}">{web_page._STYLE}{_STYLE}</style></head><body>'
        + "".join(parts)
        + "</body></html>"
    )
