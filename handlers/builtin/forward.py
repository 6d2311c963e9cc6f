"""`forward`: POST the session result as JSON to `[forward] url`, signed the Standard Webhooks
way with `[forward] secret`. The secret is the plugin's own (its table, `ForwardConfig`, comes
from `[forward]` and `[archive] list_files`: handlers/plugin_config.py), not one of idlehook's.

`webhook-id` is the notification's event id plus this handler's name, stable across retries, so
the receiver can de-duplicate. A non-2xx response raises: the run retries with backoff.
"""

import json
from datetime import datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from idlehook import HandlerContext, PermanentError
from idlehook.settings import ForwardSettings


class ForwardError(Exception):
    pass


def require_configured(config: ForwardSettings) -> str:
    """The signing secret; PermanentError when there is nowhere (or no way) to send."""
    if not config.url:
        raise PermanentError("forward.url is not configured")
    if config.secret is None or not config.secret.get_secret_value():
        raise PermanentError("forward.secret is not configured; refusing to send unsigned")
    return config.secret.get_secret_value()


async def post_signed(
    config: ForwardSettings,
    message_id: str,
    payload: str,
    sent_at: datetime,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.Response:
    """POST `payload` to `config.url`, signed the Standard Webhooks way; raise unless 2xx.

    Also used to ask a person for an approval (handlers/tools/confirm.py).
    """
    secret = require_configured(config)
    assert config.url is not None  # require_configured checked it
    signature = Webhook(secret).sign(message_id, sent_at, payload)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }
    async with httpx.AsyncClient(transport=transport, timeout=config.timeout_seconds) as http:
        response = await http.post(config.url, content=payload, headers=headers)
    if not response.is_success:
        raise ForwardError(f"forward target answered {response.status_code}")
    return response


class ForwardConfig(ForwardSettings):
    # List the session's files into the result sent (as `[archive] list_files` does for
    # result.json: one more API call).
    list_files: bool = False


class ForwardHandler:
    name = "forward"
    reads_only = True  # never wakes the session (handlers/builtin/delete.py relies on it)
    Config = ForwardConfig

    def __init__(
        self,
        config: ForwardConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or ForwardConfig()
        self.transport = transport  # tests may pass one; None: real network

    def body(self, ctx: HandlerContext, result: dict[str, Any]) -> str:
        return json.dumps(
            {
                "type": "idlehook.session_result",
                "event_id": ctx.event.event_id,
                "event_type": ctx.event.event_type,
                "session_id": ctx.event.session_id,
                "result": result,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    async def handle(self, ctx: HandlerContext) -> None:
        config = self.config
        require_configured(config)  # before fetching anything: dead-letters at once
        # The same result archive writes: files listed only when `[archive] list_files` says so.
        result = await ctx.result(files=config.list_files)
        payload = self.body(ctx, result.model_dump(mode="json"))
        message_id = f"{ctx.event.event_id}.{self.name}"
        response = await post_signed(config, message_id, payload, ctx.now(), self.transport)
        ctx.log.info("forward.sent", status=response.status_code, bytes=len(payload))
