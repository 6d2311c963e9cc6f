"""`idlehook keys`: webhook signing keys kept in the store, changed while receivers run.

    idlehook keys add whsec_...            accept a new key (every receiver within seconds)
    idlehook keys add < key.txt            the same, the key read from stdin (no shell history)
    idlehook keys retire ID|FINGERPRINT [--grace 24h]
    idlehook keys list [--json]            id, fingerprint, state, times: never a secret

Exit codes: 0 done, 1 no such key (or one past its grace), 2 bad input (a key that is not
`whsec_` + base64, a bad duration, retiring the last key without --force).
"""

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idlehook.settings import Settings

METRIC = "idlehook_webhook_signing_key_loaded"


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="webhook signing keys kept in the store: add, retire, list (no restart needed)",
        description="Webhook signing keys every receiver reloads from the store within seconds, "
        "next to ANTHROPIC_WEBHOOK_SIGNING_KEY. Secrets are never printed.",
    )
    commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)

    add = commands.add_parser("add", help="accept a new signing key (whsec_...)")
    add.add_argument(
        "secret",
        nargs="?",
        default="-",
        metavar="whsec_...",
        help="the key as the Console shows it; omitted or '-': read from stdin",
    )
    add.set_defaults(func=run_add)

    retire = commands.add_parser("retire", help="stop accepting a key once its grace has passed")
    retire.add_argument("key", metavar="ID|FINGERPRINT", help="as `idlehook keys list` shows it")
    retire.add_argument(
        "--grace",
        default="24h",
        help="keep verifying it this long (default 24h; 0s: stop now), for deliveries in flight",
    )
    retire.add_argument(
        "--force", action="store_true", help="retire it even if no other key would be left"
    )
    retire.set_defaults(func=run_retire)

    listing = commands.add_parser("list", help="the keys receivers verify with (no secrets)")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(func=run_list)


def _error(message: str) -> None:
    print(f"idlehook keys: {message}", file=sys.stderr)


def _read_secret(value: str) -> str:
    if value != "-":
        return value
    if sys.stdin.isatty():
        return getpass.getpass("signing key (whsec_...): ")  # not echoed
    return sys.stdin.readline()


def run_add(args: argparse.Namespace) -> int:
    from idlehook.loading import open_engine, settings_from_args
    from receiver.config import DEFAULT_KEY_REFRESH_SECONDS
    from store import signing_keys
    from store.models import utcnow

    secret = _read_secret(args.secret)
    try:
        signing_keys.decode_secret(secret)  # bad input opens nothing
    except signing_keys.BadKeyFormat as exc:
        _error(f"not a signing key: {exc}")
        return 2
    settings = settings_from_args(args)
    engine = open_engine(settings, pool_size=1)
    try:
        info, outcome = signing_keys.add(engine, secret, utcnow())
    finally:
        engine.dispose()
    said = {"added": "added", "present": "already live", "restored": "live again"}[outcome]
    print(f"key {info.id} ({info.fingerprint}): {said}")
    if outcome != "present":
        print(
            f"every receiver verifies with it within {DEFAULT_KEY_REFRESH_SECONDS:g}s; before "
            "rolling the Console's secret, check each receiver's /metrics for "
            f'{METRIC}{{key_index="{info.fingerprint}"}}'
        )
    return 0


def run_retire(args: argparse.Namespace) -> int:
    from handlers.durations import DurationError, format_duration, parse_duration
    from idlehook.loading import open_engine, settings_from_args
    from store import signing_keys
    from store.models import utcnow

    try:
        grace = parse_duration(args.grace)
    except DurationError as exc:
        _error(str(exc))
        return 2
    settings = settings_from_args(args)
    engine = open_engine(settings, pool_size=1)
    now = utcnow()
    try:
        stored = signing_keys.listing(engine)
        try:
            target = signing_keys.resolve(stored, args.key)
        except signing_keys.UnknownKey as exc:
            return _unknown(exc, settings, args.key)
        if target.state(now) == "expired":
            _error(f"key {target.id} ({target.fingerprint}) is past its grace already")
            return 1
        others = [k for k in stored if k.id != target.id and k.state(now) == "live"]
        if not others and not settings.webhook_signing_keys and not args.force:
            _error(
                f"key {target.id} ({target.fingerprint}) is the last live key: once retired, "
                "every delivery is refused (401) and Anthropic disables the endpoint. Add its "
                "successor first (`idlehook keys add`), or pass --force."
            )
            return 2
        try:
            info = signing_keys.retire(engine, args.key, grace, now)
        except signing_keys.KeyExpired as exc:
            _error(str(exc))
            return 1
        signing_keys.forget_expired(engine, now)
    finally:
        engine.dispose()
    assert info.expires_at is not None
    if grace:
        print(
            f"key {info.id} ({info.fingerprint}): retiring; verifies until "
            f"{info.expires_at.isoformat(timespec='seconds')} ({format_duration(grace)} grace)"
        )
    else:
        print(f"key {info.id} ({info.fingerprint}): retired; receivers drop it within seconds")
    return 0


def _unknown(exc: Exception, settings: "Settings", ref: str) -> int:
    env = _env_rows(settings)
    if any(ref.strip().lower() in (row["id"], row["fingerprint"]) for row in env):
        _error(
            f"{ref.strip()} is a key from the environment (ANTHROPIC_WEBHOOK_SIGNING_KEY): "
            "remove it there and restart the receivers"
        )
        return 2
    _error(f"{exc} (see `idlehook keys list`)")
    return 1


def run_list(args: argparse.Namespace) -> int:
    from idlehook.loading import open_engine, settings_from_args
    from store import signing_keys
    from store.models import utcnow

    settings = settings_from_args(args)
    engine = open_engine(settings, pool_size=1)
    now = utcnow()
    try:
        signing_keys.forget_expired(engine, now)
        stored = signing_keys.listing(engine)
    finally:
        engine.dispose()
    # key_index: the label receivers count matches under and report loaded keys by.
    rows = [
        *_env_rows(settings),
        *({**info.to_json(now), "key_index": info.fingerprint} for info in stored),
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(rows)
    return 0


def _env_rows(settings: "Settings") -> list[dict[str, Any]]:
    """The environment's keys as listed: by position (their metric label), fingerprinted."""
    from receiver.verify import SigningKey
    from store import signing_keys

    rows: list[dict[str, Any]] = []
    for index, value in enumerate(settings.signing_key_values()):
        try:
            key = SigningKey.parse(index, value)
        except ValueError:
            fingerprint = "invalid"  # the receiver refuses to start with it; never show it
        else:
            fingerprint = signing_keys.fingerprint(key.secret)
        rows.append(
            {
                "id": f"env{index}",
                "fingerprint": fingerprint,
                "source": "env",
                "state": "live",
                "added_at": None,
                "retired_at": None,
                "verifies_until": None,
                "key_index": str(index),
            }
        )
    return rows


def _print_table(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        print("no signing keys: set ANTHROPIC_WEBHOOK_SIGNING_KEY or `idlehook keys add`")
        return
    header = ("ID", "FINGERPRINT", "SOURCE", "STATE", "ADDED", "RETIRED", "VERIFIES UNTIL")
    table = [header] + [
        (
            str(row["id"]),
            str(row["fingerprint"]),
            str(row["source"]),
            str(row["state"]),
            _when(row["added_at"]),
            _when(row["retired_at"]),
            _when(row["verifies_until"]) if row["state"] != "live" else "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    print(
        f"\nmatches: idlehook_webhook_signing_key_matches_total{{key_index}}; loaded per receiver: "
        f"{METRIC}{{key_index}} (key_index: an env key's position, a stored key's fingerprint)"
    )


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") + "Z" if iso else "-"
