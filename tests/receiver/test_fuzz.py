"""Whatever a client sends, the pure checks answer with their own error, never anything else."""

import contextlib
import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.errors import BadEvent, BadSignature
from receiver.event import parse_event
from receiver.verify import SigningKey, verify
from tests.receiver.conftest import KEY_A

KEYS = [SigningKey.parse(0, KEY_A)]
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
header_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200),
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
        header_text,
    ),
)
def test_verify_only_raises_bad_signature(body: bytes, headers: dict[str, str]) -> None:
    with contextlib.suppress(BadSignature):
        verify(body, headers, KEYS, now=T0)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(lambda v: repr(v).encode()))
def test_parse_only_raises_bad_event(body: bytes) -> None:
    with contextlib.suppress(BadEvent):
        parse_event(body)


@settings(max_examples=300, deadline=None)
@given(
    envelope=st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("event") | json_values,
            "id": st.text(max_size=10) | json_values,
            "created_at": st.just("2026-11-25T00:00:00Z") | st.text(max_size=30) | json_values,
            "data": st.fixed_dictionaries(
                {},
                optional={"type": st.text(max_size=30) | json_values, "id": json_values},
            )
            | json_values,
        },
    )
)
def test_parse_of_near_miss_envelopes(envelope: dict[str, object]) -> None:
    try:
        parsed = parse_event(json.dumps(envelope).encode())
    except BadEvent:
        return
    assert parsed.event_id
    assert parsed.event_type
    assert parsed.resource_id
