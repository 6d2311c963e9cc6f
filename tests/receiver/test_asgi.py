"""The intake as a bare ASGI callable: branches a well-behaved HTTP server never lets through."""

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from receiver.config import ReceiverConfig
from receiver.intake import WebhookIntake
from store.inbox import Inbox
from tests.receiver.conftest import KEY_A, NOW, WEBHOOK, event_body, signed_headers


@pytest.fixture
def intake(sqlite_url: str) -> Iterator[WebhookIntake]:
    inbox = Inbox.connect(sqlite_url)
    yield WebhookIntake(
        ReceiverConfig.from_secrets([KEY_A], max_body_bytes=2048), inbox, lambda: NOW
    )
    inbox.close()


async def call(
    intake: WebhookIntake, headers: dict[str, str], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": WEBHOOK,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    inbound = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(inbound)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await intake(scope, receive, send)
    return sent


async def test_unparseable_content_length_is_a_400(intake: WebhookIntake) -> None:
    sent = await call(intake, {"content-length": "12x"}, [])
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b'{"error": "bad_content_length"}'


async def test_a_body_longer_than_declared_is_still_capped(intake: WebhookIntake) -> None:
    chunk = {"type": "http.request", "body": b"x" * 1024, "more_body": True}
    sent = await call(intake, {"content-length": "10"}, [chunk, chunk, chunk])
    assert sent[0]["status"] == 413


async def test_client_gone_mid_body_gets_no_answer_and_nothing_is_stored(
    intake: WebhookIntake,
) -> None:
    body = event_body("wevt_gone")
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert await call(intake, signed_headers(body, "wevt_gone"), messages) == []
    assert intake.inbox.depth() == 0


async def test_body_in_many_chunks_is_reassembled(intake: WebhookIntake) -> None:
    body = event_body("wevt_chunks")
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[i : i + 7], "more_body": True}
        for i in range(0, len(body), 7)
    ]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = await call(intake, signed_headers(body, "wevt_chunks"), messages)
    assert (sent[0]["status"], sent[1]["body"]) == (204, b"")
    assert (b"idlehook-outcome", b"stored") in sent[0]["headers"]
    await intake.inbox.stop()
