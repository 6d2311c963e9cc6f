"""The shipped JSON Schema of the published message, checked with an independent validator."""

import json
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from handlers.builtin.publish_message import SCHEMA_FILE

_VALIDATOR = Draft202012Validator(
    json.loads(SCHEMA_FILE.read_text()), format_checker=Draft202012Validator.FORMAT_CHECKER
)


def validate(message: dict[str, Any]) -> None:
    errors = sorted(_VALIDATOR.iter_errors(message), key=str)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
