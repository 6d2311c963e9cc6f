"""Post each finished session's result to a Slack incoming webhook.

Install next to idlehook (`pip install ./examples/idlehook-slack`) and name `slack` in a route:

    [[routes]]
    event_types = ["session.status_idled"]
    stop_reasons = ["end_turn"]
    handlers = ["archive", "slack"]
"""

import os

import httpx

from idlehook import HandlerContext, PermanentError


class SlackHandler:
    name = "slack"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get("SLACK_WEBHOOK_URL")

    async def handle(self, ctx: HandlerContext) -> None:
        if not self.url:
            raise PermanentError("SLACK_WEBHOOK_URL is not set")  # dead-lettered at once
        result = await ctx.result()
        summary = (result.final_message or "")[:500]
        text = f"{result.session_id} finished ({result.stop_reason}): {summary}"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(self.url, json={"text": text})
            response.raise_for_status()  # non-2xx: retried with backoff, then dead-lettered
