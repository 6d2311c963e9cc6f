"""POST a payload to `[forward] url`, signed the Standard Webhooks way with `[forward] secret`.

Below both users: the `forward` plugin (handlers/builtin/forward.py) and the approvals' call for
a person (handlers/tools/confirm.py), which the `answer` plugin runs.
"""

from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from handlers.config import ForwardSettings
from handlers.errors import PermanentError


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

    The `forward` plugin's results and the approvals' requests for a person
    (handlers/tools/confirm.py) alike.
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
