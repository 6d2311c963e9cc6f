"""ReceiverConfig: what the webhook edge needs from Settings, and nothing else."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from receiver.verify import SigningKey

WEBHOOK_PATH = "/webhooks/anthropic"
DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_TOLERANCE = timedelta(minutes=5)
DEFAULT_KEY_REFRESH_SECONDS = 2.0


class ReceiverSettings(Protocol):
    """The slice of idlehook's Settings read here (receiver does not import idlehook)."""

    max_body_bytes: int
    timestamp_tolerance_seconds: int

    def signing_key_values(self) -> list[str]: ...


@dataclass(frozen=True)
class ReceiverConfig:
    signing_keys: tuple[SigningKey, ...]
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timestamp_tolerance: timedelta = DEFAULT_TOLERANCE
    webhook_path: str = WEBHOOK_PATH
    # How often a receiver reloads the keys kept in the store (`idlehook keys`).
    key_refresh_seconds: float = DEFAULT_KEY_REFRESH_SECONDS

    @classmethod
    def from_secrets(cls, secrets: Sequence[str], **kwargs: object) -> "ReceiverConfig":
        keys = tuple(SigningKey.parse(i, s) for i, s in enumerate(secrets))
        return cls(signing_keys=keys, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: ReceiverSettings) -> "ReceiverConfig":
        return cls.from_secrets(
            settings.signing_key_values(),
            max_body_bytes=settings.max_body_bytes,
            timestamp_tolerance=timedelta(seconds=settings.timestamp_tolerance_seconds),
        )
