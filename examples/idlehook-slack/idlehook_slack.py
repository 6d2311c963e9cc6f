"""Post each finished session's result to a Slack incoming webhook.

Install next to idlehook (`pip install ./examples/idlehook-slack`), give it its table, and name
`slack` in a route:

    [plugins.slack]
    webhook_url = "https://hooks.slack.com/services/..."  # or IDLEHOOK_PLUGINS__SLACK__WEBHOOK_URL

    [[routes]]
    event_types = ["session.status_idled"]
    stop_reasons = ["end_turn"]
    handlers = ["archive", "slack"]
"""

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from idlehook import HandlerContext


class SlackConfig(BaseModel):
    """`[plugins.slack]`, validated when idlehook starts: a typo or a missing URL stops it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretStr  # the URL is the credential: never logged
    max_chars: int = Field(default=500, ge=1)
    timeout_seconds: float = Field(default=10.0, gt=0)


class SlackHandler:
    name = "slack"
    reads_only = True  # it never wakes the session
    Config = SlackConfig

    def __init__(self, config: SlackConfig) -> None:
        self.config = config

    async def handle(self, ctx: HandlerContext) -> None:
        result = await ctx.result()
        summary = (result.final_message or "")[: self.config.max_chars]
        text = f"{result.session_id} finished ({result.stop_reason}): {summary}"
        async with httpx.AsyncClient(timeout=self.config.timeout_seconds) as http:
            response = await http.post(
                self.config.webhook_url.get_secret_value(), json={"text": text}
            )
        if not response.is_success:
            # Retried with backoff, then dead-lettered. Not raise_for_status(): its message
            # holds the URL, which is the secret, and would land in the run's last error.
            raise RuntimeError(f"slack answered {response.status_code}")
