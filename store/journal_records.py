"""What one journal record holds: a delivery's Row, or an unrecognised body, as JSON.

JSON, not marshal (the writer pipe's format): a journal outlives the process that wrote it, and
may be drained by the next release on another Python. Floats round-trip exactly through JSON,
so a drained Row is the Row the edge built; an unrecognised body travels as base64, since it
may not even be UTF-8.
"""

import base64
import binascii
import json
from typing import Any

from store.ingest import Row
from store.unrecognised import Unrecognised

Record = Row | Unrecognised
VERSION = 1
_DELIVERY = "delivery"
_UNRECOGNISED = "unrecognised"


class BadRecord(ValueError):
    """A frame whose payload is no record this version can read: quarantined, not retried."""


def encode(record: Record) -> bytes:
    if isinstance(record, Unrecognised):
        value: dict[str, Any] = {
            "v": VERSION,
            "kind": _UNRECOGNISED,
            "message_id": record.message_id,
            "received_at": record.received_at,
            "body": base64.b64encode(record.body).decode("ascii"),
            "headers": record.headers,
            "secret_index": record.secret_index,
            "reason": record.reason,
        }
    else:
        value = {"v": VERSION, "kind": _DELIVERY, "row": list(record)}
    return json.dumps(value, separators=(",", ":")).encode()


def decode(payload: bytes) -> Record:
    try:
        value = json.loads(payload)
        if value["v"] != VERSION:
            raise BadRecord(f"journal record version {value['v']!r}")
        if value["kind"] == _DELIVERY:
            return _row(value["row"])
        if value["kind"] == _UNRECOGNISED:
            return Unrecognised(
                message_id=str(value["message_id"]),
                received_at=float(value["received_at"]),
                body=base64.b64decode(value["body"], validate=True),
                headers={str(k): str(v) for k, v in value["headers"].items()},
                secret_index=_optional_int(value["secret_index"]),
                reason=str(value["reason"]),
            )
    except BadRecord:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise BadRecord(f"unreadable journal record: {type(exc).__name__}") from None
    raise BadRecord("unknown journal record kind")


def received_at(record: Record) -> float:
    return record.received_at if isinstance(record, Unrecognised) else record[5]


def key(record: Record) -> str:
    """The event id, or the message id of an unrecognised body: what a log line names."""
    return record.message_id if isinstance(record, Unrecognised) else record[0]


def _row(value: list[Any]) -> Row:
    if not isinstance(value, list) or len(value) != 10:
        raise BadRecord("a delivery row has 10 fields")
    event_id, event_type, resource_id, session_id, created, received, body, headers, key_i, src = (
        value
    )
    strings = (event_id, event_type, resource_id, body, src)
    if not all(isinstance(s, str) for s in strings) or not isinstance(headers, dict):
        raise BadRecord("a delivery row's fields are of the wrong types")
    return (
        event_id,
        event_type,
        resource_id,
        None if session_id is None else str(session_id),
        None if created is None else float(created),
        float(received),
        body,
        {str(k): str(v) for k, v in headers.items()},
        _optional_int(key_i),
        src,
    )


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRecord("expected an integer")
    return value
