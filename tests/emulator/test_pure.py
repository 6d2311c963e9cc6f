"""Pure parts: cron, cursors, scripts, the billing ledger, prices, backoff, query decoding, CLI
args."""

import random
import time
from datetime import UTC, datetime

import pytest

from emulator import cron
from emulator.billing import Ledger, report
from emulator.clock import SpeedClock
from emulator.errors import BadRequest
from emulator.pagination import decode_cursor, paginate
from emulator.pricing import has_list_price
from emulator.query import Query
from emulator.ratelimit import RateLimiter
from emulator.scripts import UseCustomTool, UseTool, choose_script, steps_for
from emulator.sender import backoff_seconds, sign
from idlehook.cli import build_parser
from idlehook.cli.emulator import config_from_args


def test_cron_next_fire_times() -> None:
    every_weekday_9 = cron.parse("0 9 * * 1-5")
    after = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday
    assert cron.next_after(every_weekday_9, cron.zone("UTC"), after) == datetime(
        2026, 11, 30, 9, 0, tzinfo=UTC
    )
    berlin = cron.next_after(cron.parse("30 8 * * *"), cron.zone("Europe/Berlin"), after)
    assert berlin == datetime(2026, 11, 28, 7, 30, tzinfo=UTC)
    steps = cron.upcoming(cron.parse("*/15 * * * *"), cron.zone("UTC"), after, 3)
    assert [t.minute for t in steps] == [15, 30, 45]
    assert cron.parse("0 0 * * 7").dows == frozenset({0})
    assert cron.next_after(cron.parse("0 0 30 2 *"), cron.zone("UTC"), after) is None


@pytest.mark.parametrize("bad", ["* * * *", "@daily", "0 0 L * *", "0 24 * * *", "*/0 * * * *"])
def test_cron_rejects(bad: str) -> None:
    with pytest.raises(cron.CronError):
        cron.parse(bad)


def test_cursor_pages_and_order_binding() -> None:
    items = list(range(7))
    first = paginate(items, limit=3, page=None, order="asc")
    assert first.data == [0, 1, 2]
    assert first.prev_page is None
    second = paginate(items, limit=3, page=first.next_page, order="asc")
    third = paginate(items, limit=3, page=second.next_page, order="asc")
    assert third.data == [6]
    assert third.next_page is None
    assert third.prev_page is not None
    with pytest.raises(BadRequest):
        decode_cursor(first.next_page or "", "desc")
    with pytest.raises(BadRequest):
        decode_cursor("garbage", "asc")


def test_scripts() -> None:
    assert choose_script({}, "do it #script:terminate", "end_turn") == "terminate"
    assert choose_script({"emulator_script": "budget_reached"}, "#script:x", "e") == (
        "budget_reached"
    )
    assert choose_script({}, None, "end_turn") == "end_turn"
    assert sum(isinstance(s, UseCustomTool) for s in steps_for("custom_tools:3")) == 3
    assert sum(isinstance(s, UseTool) and s.ask for s in steps_for("requires_action:2")) == 2
    for bad in ("nope", "custom_tools:0", "custom_tools:x"):
        with pytest.raises(BadRequest):
            steps_for(bad)


def test_ledger_models() -> None:
    ledger = Ledger()
    ledger.created("a", 0.0)
    ledger.started("a", 10.0)
    ledger.stopped("a", 40.0)
    ledger.deleted("a", 100.0)
    ledger.created("b", 0.0)
    exists = report(ledger, "exists", 0.08, now=3600.0)
    running = report(ledger, "running", 0.08, now=3600.0)
    assert exists["total_container_seconds"] == 100.0 + 3600.0
    assert running["total_container_seconds"] == 30.0
    assert running["total_cost_usd"] == pytest.approx(30 / 3600 * 0.08)


def test_ledger_counterfactual_and_token_cost() -> None:
    ledger = Ledger()
    ledger.created("a", 0.0)
    ledger.started("a", 0.0)
    ledger.spent("a", 0.25)
    ledger.cut_short("a", 600.0, 7200.0, token_usd=1.5)
    ledger.stopped("a", 600.0)
    ledger.created("b", 0.0)
    ledger.started("b", 0.0)
    ledger.cut_short("b", 100.0, 90.0, token_usd=0.0)  # ran past its schedule: nothing avoided
    ledger.stopped("b", 100.0)
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    running = report(ledger, "running", 0.08, now=3600.0, wall_origin=origin)
    (a, b) = running["sessions"]
    assert a["running_seconds"] == 600.0
    assert a["token_usd"] == 0.25
    assert a["avoided_running_seconds"] == 6600.0
    assert a["avoided_runtime_usd"] == pytest.approx(6600 / 3600 * 0.08)
    assert a["avoided_token_usd"] == 1.5
    assert a["would_have_run_until"] == "2026-01-01T02:00:00.000000Z"
    assert b["avoided_running_seconds"] == 0.0
    assert b["would_have_run_until"] == "2026-01-01T00:01:40.000000Z"
    assert running["emulated_now"] == "2026-01-01T01:00:00.000000Z"
    assert running["total_token_usd"] == 0.25
    assert running["total_avoided_running_seconds"] == 6600.0
    assert running["total_avoided_runtime_usd"] == pytest.approx(6600 / 3600 * 0.08)
    assert running["total_avoided_token_usd"] == 1.5
    exists = report(ledger, "exists", 0.08, now=3600.0, wall_origin=origin)
    assert exists["total_avoided_running_seconds"] == 6600.0
    assert exists["total_avoided_runtime_usd"] == 0.0
    assert exists["sessions"][0]["avoided_runtime_usd"] == 0.0


def test_price_table() -> None:
    for priced in ("claude-opus-4-7", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-haiku"):
        assert has_list_price(priced)
    for unpriced in ("claude-internal-preview", "custom-model", "opus-4", ""):
        assert not has_list_price(unpriced)


def test_backoff_stays_in_bounds() -> None:
    rng = random.Random(1)
    for attempt in (1, 2, 3, 6):
        assert 5.0 <= backoff_seconds(attempt, 5.0, 120.0, rng) <= 120.0


def test_signature_matches_the_reference_vector() -> None:
    key = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    when = datetime.fromtimestamp(1700000000, UTC)
    assert sign([key], "msg_test", when, '{"a":1}') == (
        "v1,Vlhkfbhjiks1Vp2w7y9M3ISBH1WuXOYdO8+KB6i4iSA="
    )


def test_query_decoding() -> None:
    q = Query(
        [
            ("statuses[]", "idle"),
            ("statuses[]", "running"),
            ("created_at[gte]", "2026-01-01T00:00:00Z"),
            ("limit", "5"),
        ]
    )
    assert q.get_list("statuses") == ["idle", "running"]
    assert q.time_range("created_at")["gte"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert q.get_int("limit", 20) == 5
    with pytest.raises(BadRequest):
        Query([("limit", "0")]).get_int("limit", 20)


def test_cli_arguments_build_the_config() -> None:
    args = build_parser().parse_args(
        [
            "emulator",
            "--port",
            "9000",
            "--webhook-url",
            "http://a/h",
            "--webhook-url",
            "http://b/h",
            "--speed",
            "60",
            "--billing-model",
            "running",
            "--drop",
            "0.5",
            "--duplicate",
            "0.1",
            "--reorder",
            "4",
            "--api-429",
            "0.2",
        ]
    )
    config, generated = config_from_args(args)
    assert generated is not None
    assert generated.startswith("whsec_")
    assert config.webhook_secrets == [generated]
    assert config.webhook_urls == ["http://a/h", "http://b/h"]
    assert config.speed == 60
    assert config.billing_model == "running"
    assert config.faults.drop == 0.5
    assert config.faults.reorder_window == 4
    assert config.api_faults.error_429 == 0.2
    given = build_parser().parse_args(["emulator", "--webhook-secret", "whsec_abc"])
    assert config_from_args(given) == (config_from_args(given)[0], None)


def test_token_bucket_allows_a_minute_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(lambda: now[0])
    assert all(limiter.acquire("create", 60) is None for _ in range(60))
    wait = limiter.acquire("create", 60)
    assert wait == pytest.approx(1.0)
    assert limiter.acquire("read", 600) is None  # classes are separate
    now[0] = 1.0
    assert limiter.acquire("create", 60) is None
    assert limiter.acquire("create", 60) is not None


def test_sliding_window_refuses_until_the_oldest_leaves() -> None:
    now = [0.0]
    limiter = RateLimiter(lambda: now[0])
    for t in (0.0, 30.0):
        now[0] = t
        assert limiter.acquire("read", 2, "sliding_window") is None
    now[0] = 59.0
    assert limiter.acquire("read", 2, "sliding_window") == pytest.approx(1.0)
    now[0] = 60.5
    assert limiter.acquire("read", 2, "sliding_window") is None


async def test_sleep_never_returns_before_its_emulated_time() -> None:
    # A clock whose monotonic source runs at half speed: one real-time sleep covers only half
    # of the emulated span, as a timer that fires early would.
    origin = time.monotonic()
    clock = SpeedClock(speed=10.0, monotonic=lambda: origin + (time.monotonic() - origin) / 2)
    start = clock.elapsed()
    await clock.sleep(0.5)
    assert clock.elapsed() - start >= 0.5
