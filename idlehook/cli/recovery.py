"""`idlehook replay`, `reroute`, `discard`: recover work from inside the tool.

    idlehook replay [--id N]... [--handler NAME] [--session ID] [--json]
        re-route the deliveries of dead letters through the current routes (a fixed handler
        name runs now); the dead runs are kept as superseded
    idlehook reroute [SESSION] [--since T] [--until T] [--unmatched] [--dry-run] [--json]
        route deliveries again through the current routes: a session's, those received in a
        time range (T: a duration back from now such as 2h, or an ISO time), those that matched
        no rule; a handler that already succeeded for a delivery does not run again
    idlehook discard (--id N... | --handler NAME | --session ID) --reason TEXT [--json]
        give up on dead letters for good, keeping who, when and why

Exit codes: 0 done; 1 something chosen was left as it was (no route names a handler for it,
its delivery is busy, nothing matched a discard); 2 bad usage (no selection, a bad time).
"""

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.runs import DeadRun, Reroute

_OUTCOME = {
    "rerouted": "rerouted",
    "would_reroute": "would reroute",
    "busy": "busy: a run of it is still to finish; left alone",
    "unrouted": "not routed yet; left alone",
}


def register(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="re-route dead letters' deliveries through the current routes",
        description="Each chosen dead letter's delivery is routed again through the current "
        "[[routes]]: the handlers they name now run (a handler that already succeeded for it "
        "does not run again); the dead runs are kept, marked superseded. No filter: every "
        "dead letter.",
    )
    _selection(replay)
    replay.add_argument("--json", action="store_true", help="print the outcome as JSON")
    replay.set_defaults(func=run_replay)

    reroute = subparsers.add_parser(
        "reroute",
        help="route deliveries again through the current routes",
        description="A fresh routing run per delivery, in lane order; handlers it names that "
        "already succeeded for the delivery do not run again. Filters combine.",
    )
    reroute.add_argument("session", nargs="?", default=None, metavar="SESSION")
    reroute.add_argument("--since", default=None, metavar="T", help="received at or after T")
    reroute.add_argument("--until", default=None, metavar="T", help="received before T")
    reroute.add_argument(
        "--unmatched", action="store_true", help="only deliveries whose routing matched no rule"
    )
    reroute.add_argument(
        "--dry-run", action="store_true", help="list what would be re-routed; change nothing"
    )
    reroute.add_argument("--json", action="store_true", help="print the outcome as JSON")
    reroute.set_defaults(func=run_reroute)

    discard = subparsers.add_parser(
        "discard",
        help="give up on dead letters for good (with a reason)",
        description="Discarded runs leave the dead-letter list and are never replayed; the "
        "reason, who and when stay on the run until retention prunes it.",
    )
    _selection(discard)
    discard.add_argument("--reason", required=True, help="why (kept on the run)")
    discard.add_argument("--json", action="store_true", help="print the outcome as JSON")
    discard.set_defaults(func=run_discard)


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id", dest="ids", type=int, action="extend", nargs="+", default=[], metavar="N"
    )
    parser.add_argument("--handler", default=None, metavar="NAME")
    parser.add_argument("--session", default=None, metavar="ID")


def actor() -> str:
    """Who acted, as kept on the runs: the CLI and the local user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "cli"


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# -- replay -------------------------------------------------------------------------------------


def run_replay(args: argparse.Namespace) -> int:
    from handlers.routing import handlers_for_type
    from idlehook import wiring
    from store.models import utcnow
    from store.runs import RunStore

    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=1)
    try:
        store = RunStore(engine)
        dead = store.dead_runs(args.ids, args.handler, args.session)
        routes = {d.id: handlers_for_type(settings.routes, d.event_type) for d in dead}
        routable = [d for d in dead if routes[d.id]]
        done = store.reroute(
            [d.delivery_id for d in routable], utcnow(), by=actor(), note="replayed"
        )
    finally:
        engine.dispose()
    by_delivery = {r.delivery_id: r for r in done}
    rows = [_replay_row(d, routes[d.id], by_delivery.get(d.delivery_id)) for d in dead]
    replayed = [r for r in rows if r["outcome"] == "replayed"]
    if args.json:
        print(json.dumps({"replayed": len(replayed), "dead_letters": rows}, indent=2))
    else:
        _print_replay(rows)
    return 0 if len(replayed) == len(rows) else 1


def _replay_row(dead: "DeadRun", routes_now: list[str], done: "Reroute | None") -> dict[str, Any]:
    row = _jsonable(asdict(dead)) | {"routes_now": routes_now, "route_run_id": None}
    if not routes_now:
        row["outcome"] = "no_route"
    elif done is None or done.outcome != "rerouted" or dead.id not in done.superseded:
        row["outcome"] = done.outcome if done is not None else "busy"
    else:
        row |= {"outcome": "replayed", "route_run_id": done.route_run_id}
    return row


def _print_replay(rows: list[dict[str, Any]]) -> None:
    from idlehook.cli import tables

    out = tables.console()
    if rows:
        t = tables.table("id", "handler", "session", "event", "routes now", "outcome")
        for row in rows:
            t.add_row(
                str(row["id"]),
                row["handler"],
                row["session_id"] or "",
                row["event_type"],
                ", ".join(row["routes_now"]) or "-",
                _replay_outcome(row),
            )
        tables.print_table(t, out)
    replayed = [str(r["id"]) for r in rows if r["outcome"] == "replayed"]
    out.print(
        f"replayed {len(replayed)} dead letter(s)"
        + (f": {', '.join(replayed)}" if replayed else "")
    )
    for row in rows:
        if row["outcome"] == "no_route":
            out.print(
                f"not replayed: {row['id']}: no route in the current config names a handler for "
                f"{row['event_type']}; it stays a dead letter (add a route, or `idlehook discard`)"
            )


def _replay_outcome(row: dict[str, Any]) -> str:
    if row["outcome"] == "replayed":
        return f"replayed: routing run {row['route_run_id']}"
    if row["outcome"] == "no_route":
        return "no route names a handler for it"
    outcome = str(row["outcome"])
    return _OUTCOME.get(outcome, outcome)


# -- reroute ------------------------------------------------------------------------------------


def parse_moment(text: str, now: datetime) -> datetime:
    """A duration back from `now` ("2h", "1d") or an ISO time (UTC unless it says otherwise)."""
    from datetime import UTC

    from handlers.durations import DurationError, parse_duration

    try:
        return now - parse_duration(text)
    except DurationError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: use a duration back from now (2h, 1d) or an ISO time "
            "(2026-12-03T10:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run_reroute(args: argparse.Namespace) -> int:
    from handlers.routing import handlers_for_type, routed_types
    from idlehook import wiring
    from store.models import utcnow
    from store.runs import RunStore

    if args.session is None and args.since is None and args.until is None and not args.unmatched:
        return _error("say what to re-route: a SESSION, --since/--until, or --unmatched")
    now = utcnow()
    try:
        since = None if args.since is None else parse_moment(args.since, now)
        until = None if args.until is None else parse_moment(args.until, now)
    except ValueError as exc:
        return _error(str(exc))
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=1)
    try:
        store = RunStore(engine)
        chosen = {
            "session_id": args.session,
            "since": since,
            "until": until,
            "unmatched": args.unmatched,
        }
        ids = store.deliveries_to_reroute(**chosen)
        left_out = 0
        if args.unmatched:
            # What matched no rule and still would not (a run start, with the default routes)
            # is not worth a routing run each: only types some current route wants.
            wanted = store.deliveries_to_reroute(
                **chosen, event_types=routed_types(settings.routes)
            )
            left_out, ids = len(ids) - len(wanted), wanted
        done = store.reroute(ids, now, by=actor(), dry_run=args.dry_run)
    finally:
        engine.dispose()
    nothing = sorted(
        {r.event_type for r in done if not handlers_for_type(settings.routes, r.event_type)}
    )
    if args.json:
        body = {
            "dry_run": args.dry_run,
            "deliveries": [_jsonable(asdict(r)) for r in done],
            "types_no_route_names": nothing,
            "unmatched_no_route_wants": left_out,
        }
        print(json.dumps(body, indent=2))
    else:
        _print_reroute(done, args.dry_run, nothing)
        if left_out:
            print(
                f"left alone: {left_out} unmatched deliver{'y' if left_out == 1 else 'ies'} of "
                "types no current route names a handler for"
            )
    return 1 if any(r.outcome in ("busy", "unrouted") for r in done) else 0


def _print_reroute(done: Sequence["Reroute"], dry_run: bool, nothing: list[str]) -> None:
    from idlehook.cli import tables

    out = tables.console()
    if done:
        t = tables.table(
            "delivery",
            "session",
            "event",
            "received",
            "decision",
            "runs",
            "outcome",
            ids=("delivery",),
        )
        for r in done:
            outcome = _OUTCOME[r.outcome]
            if r.route_run_id is not None:
                outcome += f": routing run {r.route_run_id}"
            if r.superseded:
                outcome += f"; superseded dead {', '.join(map(str, r.superseded))}"
            t.add_row(
                str(r.delivery_id),
                r.session_id or "",
                r.event_type,
                r.received_at.isoformat(timespec="seconds"),
                r.decision or "",
                " ".join(r.runs),
                outcome,
            )
        tables.print_table(t, out)
    verb = "would reroute" if dry_run else "rerouted"
    counted = sum(r.outcome in ("rerouted", "would_reroute") for r in done)
    left = len(done) - counted
    out.print(
        f"{verb} {counted} deliver{'y' if counted == 1 else 'ies'}"
        + (f"; {left} left alone (busy or not routed yet)" if left else "")
    )
    for event_type in nothing:
        out.print(f"note: no route in the current config names a handler for {event_type}")


# -- discard ------------------------------------------------------------------------------------


def run_discard(args: argparse.Namespace) -> int:
    from idlehook import wiring
    from store.models import utcnow
    from store.runs import RunStore

    if not args.ids and args.handler is None and args.session is None:
        return _error("say which dead letters to discard: --id N..., --handler or --session")
    if not args.reason.strip():
        return _error("--reason must say why")
    settings = wiring.settings_from_args(args)
    engine = wiring.open_engine(settings, pool_size=1)
    try:
        store = RunStore(engine)
        dead = store.dead_runs(args.ids, args.handler, args.session)
        done = store.discard(dead, utcnow(), by=actor(), reason=args.reason)
    finally:
        engine.dispose()
    if args.json:
        rows = [_jsonable(asdict(d)) for d in done]
        print(json.dumps({"discarded": rows, "reason": args.reason.strip()}, indent=2))
    else:
        from idlehook.cli import tables

        out = tables.console()
        if done:
            t = tables.table("id", "handler", "session", "event", "error")
            for d in done:
                t.add_row(
                    str(d.id), d.handler, d.session_id or "", d.event_type, d.last_error or ""
                )
            tables.print_table(t, out)
        ids = ", ".join(str(d.id) for d in done)
        out.print(f"discarded {len(done)} dead letter(s)" + (f": {ids}" if ids else ""))
    if not done:
        print("error: no dead letter matches", file=sys.stderr)
        return 1
    return 0


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()}
