"""Fuzzing the parsers that read what a stranger sends: signaling messages and contexts.

Property: whatever the input, the parser either returns a valid model or raises
its own error type (``ProtocolError`` / ``ConfigError``) with one short line; never
another exception (a traceback in the server's log, a dead connection handler),
never a multi-line message.  ``hypothesis`` generates the inputs: raw bytes and
text, arbitrary JSON values, and valid messages with one field replaced by junk.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mixer_ext.context import parse_context
from mixer_ext.errors import ConfigError
from mixer_ext.roomserver import protocol as p

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_BYTES = 65_536
CODES = {"malformed", "oversized", "version"}

#: nesting deep enough to overflow CPython's JSON decoder if nothing stops it first
DEEP_ARRAY = "[" * 60_000
DEEP_OBJECT = '{"a":' * 12_000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=25,
)

VALID_CLIENT: list[dict[str, Any]] = [
    {"v": 1, "type": "join", "room": "r1", "token": "t", "publish": True},
    {"v": 1, "type": "answer", "sdp": "v=0\r\n"},
    {"v": 1, "type": "set-enabled", "enabled": False},
    {"v": 1, "type": "leave"},
]


@st.composite
def mutated_client_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid client message with one field replaced, removed or added."""
    message = dict(draw(st.sampled_from(VALID_CLIENT)))
    key = draw(st.sampled_from([*message, "extra", "type", "v"]))
    action = draw(st.sampled_from(["replace", "remove"]))
    if action == "remove":
        message.pop(key, None)
    else:
        message[key] = draw(json_values)
    return message


def assert_one_line_protocol_error(exc: p.ProtocolError) -> None:
    assert exc.code in CODES, exc.code
    text = str(exc)
    assert text and "\n" not in text and len(text) <= 300, text


def check_client(data: str | bytes) -> None:
    try:
        message = p.parse_client_message(data, MAX_BYTES)
    except p.ProtocolError as exc:
        assert_one_line_protocol_error(exc)
    else:
        assert isinstance(message, p.Join | p.Answer | p.SetEnabled | p.Leave)
        # what was accepted encodes back to something that parses to the same message
        assert p.parse_client_message(p.encode(message), MAX_BYTES) == message


@FUZZ
@given(st.binary(max_size=2_000))
@example(b"\xff\xfe{")
def test_client_parser_on_raw_bytes(data: bytes) -> None:
    check_client(data)


@FUZZ
@given(st.text(max_size=2_000))
@example("NaN")
@example('{"type": "set-enabled", "enabled": Infinity}')
def test_client_parser_on_text(text: str) -> None:
    check_client(text)


@FUZZ
@given(json_values)
def test_client_parser_on_any_json_value(value: object) -> None:
    check_client(json.dumps(value))


@FUZZ
@given(mutated_client_messages())
def test_client_parser_on_nearly_valid_messages(message: dict[str, Any]) -> None:
    check_client(json.dumps(message))


@FUZZ
@given(st.text(max_size=2_000))
def test_server_parser_on_text(text: str) -> None:
    """The client side reads the server's messages with the same care."""
    try:
        p.parse_server_message(text)
    except p.ProtocolError as exc:
        assert_one_line_protocol_error(exc)


# --- the extension context ------------------------------------------------------------

VALID_CONTEXT: dict[str, Any] = {
    "room": {"name": "RM1"},
    "identity": "audio-mixer-v1",
    "outputs": ["hls:main", "rtmp://h/app/key", "file:rec.m4a"],
    "audioBitrate": 128,
    "maxParticipantDuration": 3600,
}


@st.composite
def mutated_contexts(draw: st.DrawFn) -> dict[str, Any]:
    context = json.loads(json.dumps(VALID_CONTEXT))
    key = draw(st.sampled_from([*context, "unknown"]))
    if draw(st.booleans()):
        context.pop(key, None)
    else:
        context[key] = draw(
            json_values
            | st.lists(st.text(max_size=60), max_size=4)
            | st.builds(lambda s: {"name": s}, st.text(max_size=300))
        )
    return context


def check_context(text: str) -> None:
    try:
        context = parse_context(text)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("context: "), message
        assert "\n" not in message and len(message) <= 400, message
        assert "app/key" not in message, f"a stream key in an error: {message}"
    else:
        assert context.room.name and context.outputs


@FUZZ
@given(st.text(max_size=2_000))
@example('{"room": {"name": "r"}, "outputs": ["hls:x"], "audioBitrate": 1e999}')
def test_context_parser_on_text(text: str) -> None:
    check_context(text)


@FUZZ
@given(json_values)
def test_context_parser_on_any_json_value(value: object) -> None:
    check_context(json.dumps(value))


@FUZZ
@given(mutated_contexts())
def test_context_parser_on_nearly_valid_contexts(context: dict[str, Any]) -> None:
    check_context(json.dumps(context))


# --- nesting deep enough to overflow the JSON decoder -----------------------------------

NESTED = [
    DEEP_ARRAY,
    DEEP_OBJECT,
    '{"v": 1, "type": "join", "room": "r", "token": ' + "[" * 30_000,
]


@pytest.mark.parametrize("text", NESTED, ids=["array", "object", "join"])
def test_client_parser_on_deep_nesting(text: str) -> None:
    check_client(text)
    check_client(text.encode())


def test_server_parser_on_deep_nesting() -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_server_message('{"type": "offer", "sdp": "x", "tracks": ' + "[" * 60_000)


def test_context_parser_on_deep_nesting() -> None:
    check_context('{"room": ' + "[" * 60_000)
