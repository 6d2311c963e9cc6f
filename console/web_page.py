"""The operator page as HTML: a pure function of what the store said, with no I/O.

Everything dynamic goes through `html.escape` (session titles, errors and tool inputs are
written by agents and users). No external assets: the chart is inline SVG drawn here, styles are
inline, and the scripts (approval and budget buttons) carry the response's CSP nonce.
"""

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from console import recovery_page
from handlers.spend import cap_from_metadata
from store.dashboard import Dashboard, MinuteBucket, SessionRow

CHART_WIDTH = 1180
CHART_HEIGHT = 220
_PAD = 40  # room for the axis labels

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#667085}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border:1px solid #d0d5dd;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #e4e7ec;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.s-idle,.s-succeeded,.s-deleted{color:#067647}.s-running,.s-pending{color:#175cd3}
.s-failed,.s-refused{color:#b54708}.s-dead,.s-terminated{color:#b42318;font-weight:600}
.alarm{background:#b42318;color:#fff;padding:10px 16px;border-radius:8px;margin:12px 0}
svg{background:#fff;border:1px solid #d0d5dd;border-radius:8px}
button{margin-right:6px}
"""

_APPROVAL_SCRIPT = """
for (const button of document.querySelectorAll("button[data-approval]")) {
  button.addEventListener("click", async () => {
    const decision = button.dataset.decision;
    let message = null;
    if (decision === "deny") {
      message = window.prompt("Message for the agent", "Denied by an operator");
      if (message === null) return;
    }
    const row = button.closest("tr");
    const outcome = row.querySelector(".outcome");
    const response = await fetch("/approvals/" + encodeURIComponent(button.dataset.approval), {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Idlehook-CSRF": "1"},
      body: JSON.stringify({decision: decision, message: message}),
    });
    outcome.textContent = response.ok ? decision : "failed (" + response.status + ")";
    if (response.ok) row.querySelectorAll("button").forEach((b) => (b.disabled = true));
  });
}
"""


_BUDGET_SCRIPT = """
for (const button of document.querySelectorAll("button[data-budget-session]")) {
  button.addEventListener("click", async () => {
    const outcome = button.parentElement.querySelector(".outcome");
    const answer = window.prompt(
      "New spend ceiling in US dollars (now $" + button.dataset.budgetCap + ")", "");
    if (answer === null || answer.trim() === "") return;
    const usd = Number(answer);
    if (!Number.isFinite(usd)) {
      outcome.textContent = "not a number";
      return;
    }
    const session = encodeURIComponent(button.dataset.budgetSession);
    const response = await fetch("/sessions/" + session + "/budget", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Idlehook-CSRF": "1"},
      body: JSON.stringify({usd: usd}),
    });
    const body = await response.json().catch(() => ({}));
    outcome.textContent = response.ok
      ? "raised to $" + body.cap_usd.toFixed(2)
      : body.message || "failed (" + response.status + ")";
    if (response.ok) button.disabled = true;
  });
}
"""


def _ts(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _money(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


def session_link(session_id: str | None) -> str:
    """A session id that opens its own view (console/session_page.py)."""
    if not session_id:
        return ""
    href = "/sessions/" + quote(session_id, safe="") + "/view"
    return f'<a href="{escape(href)}"><code>{escape(session_id)}</code></a>'


def _state(value: str | None) -> str:
    text = value or "?"
    return f'<span class="s-{escape(text)}">{escape(text)}</span>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """`rows` cells are already HTML (escaped by the caller)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def chart_svg(buckets: Sequence[MinuteBucket]) -> str:
    """Deliveries per minute as bars, mean handler latency as a line on its own scale."""
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, _PAD
    plot_w, plot_h = width - 2 * pad, height - 2 * pad
    n = max(len(buckets), 1)
    step = plot_w / n
    top_count = max([b.deliveries for b in buckets] + [1])
    latencies = [b.mean_latency_ms for b in buckets if b.mean_latency_ms is not None]
    top_ms = max([*latencies, 1.0])
    parts = [
        f'<svg id="chart" role="img" width="100%" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>Deliveries per minute and mean handler latency, last hour</title>",
        f'<line x1="{pad}" y1="{pad + plot_h}" x2="{pad + plot_w}" y2="{pad + plot_h}" '
        'stroke="#98a2b3"/>',
    ]
    points = []
    for i, bucket in enumerate(buckets):
        x = pad + i * step
        if bucket.deliveries:
            h = plot_h * bucket.deliveries / top_count
            parts.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{pad + plot_h - h:.1f}" '
                f'width="{max(step - 2, 1):.1f}" height="{h:.1f}" fill="#6b8fd6">'
                f"<title>{escape(_ts(bucket.start))}: {bucket.deliveries} deliveries</title>"
                "</rect>"
            )
        if bucket.mean_latency_ms is not None:
            y = pad + plot_h - plot_h * bucket.mean_latency_ms / top_ms
            points.append(f"{x + step / 2:.1f},{y:.1f}")
    if points:
        parts.append(
            f'<polyline fill="none" stroke="#d9480f" stroke-width="2" points="{" ".join(points)}"/>'
        )
        parts.extend(
            f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="#d9480f"/>'
            for p in points
        )
    first = _ts(buckets[0].start)[11:16] if buckets else ""
    last = _ts(buckets[-1].start)[11:16] if buckets else ""
    parts += [
        f'<text x="{pad}" y="{height - 12}" font-size="11" fill="#475467">{first} UTC</text>',
        f'<text x="{pad + plot_w}" y="{height - 12}" font-size="11" fill="#475467" '
        f'text-anchor="end">{last}</text>',
        f'<text x="{pad}" y="{pad - 10}" font-size="12" fill="#3559a8">'
        f"deliveries/min (max {top_count})</text>",
        f'<text x="{pad + plot_w}" y="{pad - 10}" font-size="12" fill="#d9480f" '
        f'text-anchor="end">mean handler latency (max {top_ms:.0f} ms)</text>',
        "</svg>",
    ]
    return "".join(parts)


def _approvals(pending: Sequence[Any] | None) -> str:
    if pending is None:
        return ""  # the approvals feature is not installed
    rows = []
    for item in pending:
        shown = json.dumps(item.input, sort_keys=True, default=str)
        if len(shown) > 300:
            shown = shown[:300] + "…"
        rows.append(
            [
                escape(str(item.id)),
                session_link(item.session_id),
                escape(item.tool_name),
                f"<code>{escape(shown)}</code>",
                _ts(item.requested_at),
                _ts(item.expires_at),
                f'<button data-approval="{escape(str(item.id))}" data-decision="allow">'
                "Approve</button>"
                f'<button data-approval="{escape(str(item.id))}" data-decision="deny">'
                'Deny</button><span class="outcome"></span>',
            ]
        )
    headers = ["id", "session", "tool", "input", "requested", "expires", ""]
    return '<h2 id="approvals">Pending approvals</h2>' + _table(
        headers, rows, "Nothing waits for a decision."
    )


def _budget(row: SessionRow) -> str:
    """Spent of cap for a budgeted session; beside one paused on its cap, a button to raise it."""
    cap = cap_from_metadata(row.metadata)
    if cap is None:
        return ""
    # A budget caps the token list cost only; `cost_usd` adds runtime.
    cell = f'<span class="num">${row.token_usd or 0:.2f} / ${cap:.2f}</span>'
    if row.status == "idle" and row.stop_reason == "budget_reached" and not row.deleted:
        cell += (
            f' <button data-budget-session="{escape(row.id)}" data-budget-cap="{cap:.2f}">'
            'Raise budget</button><span class="outcome"></span>'
        )
    return cell


_BILLING_NOTE = {
    "running": (
        "Billing model <b>running</b> (as the API documents): runtime is billed only while a "
        "session runs (usage.active_seconds, per session-hour) plus tokens at list price. Idle "
        "sessions cost nothing, so deleting them is clean-up, not a saving; what saves money is "
        "interrupting runs nobody waits for (<code>[reaper] max_running</code>) and budgets."
    ),
    "exists": (
        "Billing model <b>exists</b> (the tutorial's): a container is billed from create to "
        "delete, so each deleted session saves its hourly rate. The API documents otherwise."
    ),
}


def endpoint_banner(view: Dashboard) -> str:
    """A red banner while Anthropic reports the webhook endpoint disabled."""
    endpoint = view.endpoint
    if endpoint is None or endpoint.state != "disabled":
        return ""
    reason = escape(endpoint.reason or "disabled by a person")
    return (
        '<div class="alarm" id="endpoint-disabled" role="alert"><b>Webhook endpoint disabled'
        f"</b> ({reason}) since {_ts(endpoint.since)} UTC, as of {_ts(endpoint.checked_at)}: "
        "Anthropic sends it nothing and will not resend what it missed. Re-enable it in the "
        "Console (Manage &rarr; Webhooks); meanwhile the reconciler delivers status changes."
        "</div>"
    )


def _journal_card(view: Dashboard) -> list[tuple[str, str]]:
    """Deliveries acknowledged from the local journal, not yet in the store, and how old."""
    journal = view.journal
    if journal is None:
        return []
    oldest = journal.oldest_seconds(view.now.timestamp())
    age = f" · oldest {oldest:.0f}s" if oldest is not None else ""
    return [("journal (not yet stored)", f"{journal.depth}{age}")]


def _result_cell(s: SessionRow) -> str:
    if s.unsaved:
        return '<span class="s-dead">unsaved</span>'
    return "saved" if s.result_captured else ""


def render(
    view: Dashboard,
    pending: Sequence[Any] | None,
    nonce: str,
    billing_model: str = "running",
    *,
    unmatched: int = 0,
) -> str:
    t = view.totals
    runs = t.runs_by_state
    cards = [
        ("sessions", str(t.sessions)),
        ("cost", _money(t.total_cost_usd)),
        ("deliveries", str(t.deliveries)),
        ("duplicates", str(t.duplicates)),
        ("runs ok", str(runs.get("succeeded", 0))),
        ("runs waiting", str(sum(runs.get(s, 0) for s in ("pending", "running", "failed")))),
        ("dead letters", str(runs.get("dead", 0))),
        ("unsaved outcomes", str(t.unsaved_outcomes)),
        ("unrecognised kept", str(t.unrecognised)),
        ("rejected (1 h)", str(t.rejected_last_hour)),
        *_journal_card(view),
        ("interrupted", str(t.interrupted)),
        ("reaped", str(t.reaped)),
        (f"saved ({billing_model})", f"${t.saving_usd_per_hour:.4f}/h"),
    ]
    cards_html = "".join(f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards)
    sessions = _table(
        [
            "session",
            "status",
            "stop reason",
            "route",
            "cost",
            "budget",
            "active",
            "created",
            "result",
        ],
        (
            [
                session_link(s.id),
                _state("deleted" if s.deleted else s.status),
                escape(s.stop_reason or "")
                + (f" (interrupted: {escape(s.interrupt_reason)})" if s.interrupt_reason else ""),
                escape(s.route or ""),
                f'<span class="num">{_money(s.cost_usd)}</span>',
                _budget(s),
                "" if s.active_seconds is None else f"{s.active_seconds:.1f}s",
                _ts(s.created_at),
                _result_cell(s),
            ]
            for s in view.sessions
        ),
        "No sessions tracked yet.",
    )
    deliveries = _table(
        ["id", "received", "type", "session", "source", "duplicates"],
        (
            [
                str(d.id),
                _ts(d.received_at),
                escape(d.event_type),
                session_link(d.session_id),
                escape(d.source),
                str(d.duplicates),
            ]
            for d in view.deliveries
        ),
        "No deliveries yet.",
    )

    def run_rows(rows: Iterable[Any]) -> Iterable[list[str]]:
        for r in rows:
            yield [
                str(r.id),
                _ts(r.updated_at),
                escape(r.handler),
                session_link(r.session_id),
                _state(r.state),
                str(r.attempts),
                "" if r.duration_ms is None else f"{r.duration_ms:.0f} ms",
                escape(r.last_error or ""),
            ]

    run_headers = ["id", "updated", "handler", "session", "state", "attempts", "took", "error"]
    runs_html = _table(run_headers, run_rows(view.runs), "No handler runs yet.")
    dead_html = _table(
        [*run_headers, ""],
        (
            [*row, recovery_page.dead_letter_buttons(r.id)]
            for row, r in zip(run_rows(view.dead_letters), view.dead_letters, strict=True)
        ),
        "No dead letters.",
    )
    reaper = _table(
        ["at", "session", "action", "reason", "dry run", "saves $/h", "error"],
        (
            [
                _ts(a.at),
                session_link(a.session_id),
                _state(a.action).replace(">would_", ">would "),  # a dry run's row
                escape(a.reason),
                "yes" if a.dry_run else "",
                f"{a.saving_usd_per_hour:.4f}" if a.saving_usd_per_hour else "",
                escape(a.error or ""),
            ]
            for a in view.reaper
        ),
        "The reaper has not acted yet.",
    )
    script = f'<script nonce="{escape(nonce)}">{_APPROVAL_SCRIPT}</script>' if pending else ""
    if "data-budget-session" in sessions:
        script += f'<script nonce="{escape(nonce)}">{_BUDGET_SCRIPT}</script>'
    if view.dead_letters or unmatched:
        script += f'<script nonce="{escape(nonce)}">{recovery_page.SCRIPT}</script>'
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="refresh" content="30">'
        '<link rel="icon" href="data:,">'  # no favicon request
        "<title>idlehook</title>"
        f'<style nonce="{escape(nonce)}">{_STYLE}</style></head><body>'
        f'<h1>idlehook</h1><div class="muted">as of {_ts(view.now)} UTC · refreshes every 30 s'
        "</div>"
        f"{endpoint_banner(view)}"
        f'<div class="cards">{cards_html}</div>'
        f'<p class="muted">{_BILLING_NOTE.get(billing_model, "")}</p>'
        "<h2>Deliveries and handler latency, per minute, last hour</h2>"
        f"{chart_svg(view.chart)}"
        f"{_approvals(pending)}"
        f'<h2 id="sessions">Sessions</h2>{sessions}'
        f'<h2 id="deliveries">Recent deliveries</h2>{deliveries}'
        f'<h2 id="runs">Handler runs</h2>{runs_html}'
        f'<h2 id="dead">Dead letters</h2>{recovery_page.reroute_unmatched(unmatched)}{dead_html}'
        f'<h2 id="reaper">Reaper actions</h2>{reaper}'
        f"{script}</body></html>"
    )


def message_page(title: str, message: str, nonce: str, form: bool = False, error: str = "") -> str:
    """The login form, or a one-line explanation (503 unconfigured, 401 refused)."""
    body = f"<p>{escape(message)}</p>"
    if error:
        body += f'<p class="s-dead">{escape(error)}</p>'
    if form:
        body += (
            '<form method="post" action="/login">'
            '<label>API token <input type="password" name="token" autocomplete="current-password"'
            " autofocus></label> <button type=submit>Sign in</button></form>"
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
        f'<style nonce="{escape(nonce)}">{_STYLE}</style></head><body>'
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
