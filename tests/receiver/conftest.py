"""A receiver served on loopback over a real database, and a way to sign what we post to it."""

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from receiver.app import create_app
from receiver.config import ReceiverConfig
from store.engine import make_engine
from store.inbox import Inbox
from store.models import Delivery, HandlerRun
from tests.support.servers import serve

KEY_A = "whsec_" + base64.b64encode(b"A" * 32).decode()
KEY_B = "whsec_" + base64.b64encode(b"B" * 32).decode()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WEBHOOK = "/webhooks/anthropic"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def event_body(
    event_id: str, event_type: str = "session.status_idled", resource_id: str = "sesn_1"
) -> bytes:
    payload = {
        "type": "event",
        "id": event_id,
        "created_at": "2026-11-25T11:59:58Z",
        "data": {
            "type": event_type,
            "id": resource_id,
            "organization_id": "org_1",
            "workspace_id": "wrkspc_1",
        },
    }
    return json.dumps(payload).encode()


def signed_headers(
    body: bytes,
    msg_id: str,
    *,
    secret: str = KEY_A,
    at: datetime = NOW,
) -> dict[str, str]:
    ts = int(at.timestamp())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
        "user-agent": "Anthropic-Webhooks/1.0",
    }


@dataclass
class Receiver:
    url: str
    inbox: Inbox
    engine: sa.Engine  # a separate engine, for looking at what was committed

    def count(self, table: str, where: str = "1=1", **params: Any) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE {where}"), params
                ).scalar_one()
            )

    def deliveries(self) -> list[Delivery]:
        with Session(self.engine) as session:
            return list(session.exec(select(Delivery).order_by(Delivery.id)))  # type: ignore[arg-type]

    def runs(self) -> list[HandlerRun]:
        with Session(self.engine) as session:
            return list(session.exec(select(HandlerRun).order_by(HandlerRun.id)))  # type: ignore[arg-type]

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).mappings())


@pytest.fixture
def receiver(db_url: str) -> Iterator[Receiver]:
    config = ReceiverConfig.from_secrets([KEY_A, KEY_B], max_body_bytes=256 * 1024)
    inbox = Inbox.connect(db_url)
    app = create_app(config, inbox, now=lambda: NOW)
    engine = make_engine(db_url, pool_size=1)
    try:
        # Outage tests idle past uvicorn's 5 s keep-alive; a reused, server-closed connection
        # would be a client-side ReadError, not what is under test.
        with serve(app, timeout_keep_alive=120) as url:
            yield Receiver(url=url, inbox=inbox, engine=engine)
    finally:
        engine.dispose()
        inbox.close()
