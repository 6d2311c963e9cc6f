"""Rotation without 401s, on SQLite and PostgreSQL: the whole service on loopback (emulator ->
signed webhooks -> receiver), its signing keys kept in the store and changed by `idlehook keys`
run as a separate process against the same database while the service runs.

The sequence is the README's: add the new key, wait until the receiver has it, roll the
emulator's secret (it then signs with the new key only), watch the matches move, retire the old
key with a grace period. Not one delivery is refused along the way; a delivery signed with the
old key verifies inside its grace and is refused after it; the CLI never prints a secret.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from sqlmodel import Session, col, select

from store.models import Delivery, HandlerRun, RunState, Source
from tests.receiver.conftest import sign
from tests.support.servers import wait_for
from tests.support.stack import WEBHOOK_PATH, Running, emulator_and_service

OLD_RAW = b"rotation-old-key-0123456789abcdef"
NEW_RAW = b"rotation-new-key-fedcba9876543210"
OLD = "whsec_" + base64.b64encode(OLD_RAW).decode()
NEW = "whsec_" + base64.b64encode(NEW_RAW).decode()
SECRETS = [OLD, NEW, OLD[len("whsec_") :], NEW[len("whsec_") :]]
OLD_FP = hashlib.sha256(OLD_RAW).hexdigest()[:8]
NEW_FP = hashlib.sha256(NEW_RAW).hexdigest()[:8]
GRACE_SECONDS = 6
PICKUP_SECONDS = 5.0  # receivers reload every 2 s; the README promises "within seconds"


class Keys:
    """`idlehook keys ...` as an operator runs it: its own process, the service's database."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.outputs: list[str] = []
        # Nothing from this test's environment: the database comes from the config file.
        self.env = {
            k: v
            for k, v in os.environ.items()  # noqa: TID251 (a child process's environment)
            if not k.startswith(("IDLEHOOK_", "ANTHROPIC_")) or k.startswith("IDLEHOOK_TEST")
        }

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "idlehook.cli", "--config", str(self.config), "keys", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        return done


class Stack(Running):
    def launch(self, n: int) -> list[str]:
        agent, env = self.agent_and_environment("rotation")
        return [
            self.start_session(agent, env, f"job {i}", {"emulator_script": "end_turn"})
            for i in range(n)
        ]

    def archived(self, session_id: str) -> bool:
        return (self.settings.results_dir / session_id / "result.json").exists()

    def settled(self) -> bool:
        with Session(self.svc.engine) as db:
            unfinished = db.exec(
                select(HandlerRun).where(
                    col(HandlerRun.state).in_([RunState.PENDING, RunState.RUNNING, RunState.FAILED])
                )
            ).all()
        return not unfinished and self.emulator.sender.pending() == 0

    def stored(self) -> dict[str, Delivery]:
        with Session(self.svc.engine) as db:
            rows = db.exec(select(Delivery).where(col(Delivery.source) == Source.WEBHOOK)).all()
        return {d.event_id: d for d in rows}

    def loaded(self) -> dict[str, str]:
        """The receiver's own report, from its /metrics: key_index label -> state."""
        text = httpx.get(self.receiver_url + "/metrics", timeout=10).text
        out: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("idlehook_webhook_signing_key_loaded{"):
                labels = dict(
                    part.split("=", 1)
                    for part in line[line.index("{") + 1 : line.index("}")].split(",")
                )
                out[labels["key_index"].strip('"')] = labels["state"].strip('"')
        return out

    def resend(self, delivery: Delivery, secret: str) -> httpx.Response:
        """A stored delivery again, signed now with `secret`: a retry as Anthropic sends it."""
        body = delivery.body.encode()
        stamp = int(time.time())
        return httpx.post(
            self.receiver_url + WEBHOOK_PATH,
            content=body,
            headers={
                "webhook-id": delivery.event_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign(secret, delivery.event_id, stamp, body),
                "content-type": "application/json",
            },
            timeout=10,
        )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def refused() -> float:
    return counter(
        "idlehook_webhook_rejections_total", reason="no_matching_signature", status="401"
    )


def matches(label: str) -> float:
    return counter("idlehook_webhook_signing_key_matches_total", key_index=label)


@contextmanager
def stack(db_url: str, tmp_path: Path) -> Iterator[tuple[Stack, Keys]]:
    config = tmp_path / "idlehook.toml"
    config.write_text(f'database_url = "{db_url}"\n')
    keys = Keys(config)
    # The old key is already in the store when the service starts: it must verify from the
    # first request, with nothing in the environment.
    added = keys("add", OLD)
    assert added.returncode == 0, added.stderr
    assert OLD_FP in added.stdout
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=OLD,
        token="rotation-token",
        owner="rotation",
        webhook_signing_keys=[],
    ) as running:
        yield running.view(Stack), keys


def test_rotation_through_the_store_refuses_nothing(db_url: str, tmp_path: Path) -> None:
    with stack(db_url, tmp_path) as (s, keys):
        refused_before = refused()
        assert s.loaded() == {OLD_FP: "live"}
        before = s.launch(2)
        wait_for(lambda: all(map(s.archived, before)), timeout=30)
        assert matches(OLD_FP) >= 4  # each session: run started, idled

        # 1. Add the new key (from stdin: no shell history), and wait for the receiver to have it.
        added = keys("add", stdin=NEW + "\n")
        assert added.returncode == 0, added.stderr
        assert f"({NEW_FP}): added" in added.stdout
        added_at = time.monotonic()  # committed when the command exits
        wait_for(lambda: s.loaded().get(NEW_FP) == "live", timeout=PICKUP_SECONDS + 5)
        assert time.monotonic() - added_at < PICKUP_SECONDS
        listed = json.loads(keys("list", "--json").stdout)
        assert {(k["fingerprint"], k["state"], k["key_index"]) for k in listed} == {
            (OLD_FP, "live", OLD_FP),
            (NEW_FP, "live", NEW_FP),
        }

        # 2. Roll the secret: the emulator signs with the new key only from now on.
        s.emulator.apply_config({"webhook_secrets": [NEW]})
        new_before = matches(NEW_FP)
        after = s.launch(3)
        wait_for(lambda: all(map(s.archived, after)), timeout=30)
        assert matches(NEW_FP) - new_before >= 6  # the matches moved to the new key

        # 3. Retire the old key with a grace period: it still verifies inside it.
        retired = keys("retire", OLD_FP, "--grace", f"{GRACE_SECONDS}s")
        assert retired.returncode == 0, retired.stderr
        assert "retiring; verifies until" in retired.stdout
        wait_for(lambda: s.loaded().get(OLD_FP) == "retiring", timeout=PICKUP_SECONDS)
        a_delivery = next(iter(s.stored().values()))
        inside = s.resend(a_delivery, OLD)
        assert inside.status_code == 204, inside.text
        assert inside.headers["idlehook-outcome"] == "duplicate"
        assert refused() == refused_before  # nothing refused so far, manual or emulated

        # ... and after it, it does not (within a refresh of the grace's end).
        wait_for(lambda: s.resend(a_delivery, OLD).status_code == 401, timeout=GRACE_SECONDS + 8)
        assert OLD_FP not in s.loaded()
        assert s.resend(a_delivery, NEW).status_code == 204
        last = s.launch(1)
        wait_for(lambda: all(map(s.archived, last)), timeout=30)
        wait_for(s.settled, timeout=30)
        states = {k["fingerprint"]: k["state"] for k in json.loads(keys("list", "--json").stdout)}
        assert states == {OLD_FP: "expired", NEW_FP: "live"}

        # Not one emulated delivery was refused, and every event it sent is stored.
        attempts = s.emulator.sender.attempts
        assert attempts
        assert [a for a in attempts if a.status != 204] == []
        emitted = {e["id"] for e in s.emulator.sender.emitted}
        assert emitted <= set(s.stored())
        # The only 401 the receiver gave was the one this test asked for after the grace.
        assert refused() - refused_before == 1

    # The CLI never printed a secret, whatever it did.
    printed = "\n".join(keys.outputs)
    assert OLD_FP in printed
    for secret in SECRETS:
        assert secret not in printed


def test_a_bad_key_is_a_clear_error_and_nothing_is_stored(sqlite_url: str, tmp_path: Path) -> None:
    config = tmp_path / "idlehook.toml"
    config.write_text(f'database_url = "{sqlite_url}"\n')
    keys = Keys(config)
    cut_short = NEW[:20]
    for bad, says in [
        (NEW[len("whsec_") :], "starts with 'whsec_'"),
        ("whsec_not*base64*at*all", "followed by base64"),
        (cut_short, "at least 16 bytes"),
    ]:
        done = keys("add", bad)
        assert done.returncode == 2, done
        assert "not a signing key" in done.stderr
        assert says in done.stderr
        assert bad not in done.stdout + done.stderr
    assert json.loads(keys("list", "--json").stdout) == []
    # Retiring what is not there, or the last key without --force, is refused too.
    assert keys("retire", "42").returncode == 1
    assert keys("add", NEW).returncode == 0
    last = keys("retire", NEW_FP)
    assert last.returncode == 2
    assert "last live key" in last.stderr
    assert keys("retire", NEW_FP, "--grace", "soon").returncode == 2
    for secret in SECRETS:
        assert secret not in "\n".join(keys.outputs)
