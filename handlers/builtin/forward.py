"""`forward`: POST the session result as JSON to `[forward] url`, signed the Standard Webhooks
way with `[forward] secret`. The secret is the plugin's own (its table, `ForwardConfig`, comes
from `[forward]` and `[archive] list_files`: handlers/plugin_config.py), not one of idlehook's.

`webhook-id` is the notification's event id plus this handler's name, stable across retries, so
the receiver can de-duplicate. A non-2xx response raises: the run retries with backoff.
"""

import json
from typing import Any

import httpx

from handlers.api import HandlerContext
from handlers.config import ForwardSettings
from handlers.signed_post import post_signed, require_configured


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
