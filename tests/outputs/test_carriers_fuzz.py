"""Fuzzing the payload carriers: the ID3v2.4 TXXX tag (HLS) and AMF0 ``onTextData`` (RTMP).

Properties (``hypothesis``):

* round trip: any payload text, built into a carrier and parsed back, is the
  same text (UTF-8 of any script, NULs aside for ID3 where NUL ends the value,
  long strings past 64 KiB for AMF0);
* hostile input: the parsers, given arbitrary bytes, a valid carrier with a
  byte flipped, or a valid carrier cut short, either return or raise
  ``ValueError`` with one short line; never another exception (a reader of a
  stream, such as a test or a player bridge, must not die on a broken tag).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mixer_ext.core.payload import MetadataPayload
from mixer_ext.outputs.carriers import (
    amf0_on_text_data,
    id3_txxx,
    parse_amf0_on_text_data,
    parse_id3_txxx,
)

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: text without NUL (ID3 ends a TXXX value at NUL) and without lone surrogates (not UTF-8)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
identities = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
payloads = st.builds(
    MetadataPayload,
    seq=st.integers(min_value=0, max_value=2**53),
    levels=st.dictionaries(identities, st.integers(min_value=-1, max_value=32_767), max_size=8),
)


def one_line_error(exc: ValueError) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 300, text


@FUZZ
@given(texts, texts)
def test_id3_round_trip(value: str, description: str) -> None:
    assert parse_id3_txxx(id3_txxx(value, description)) == [(description, value)]


@FUZZ
@given(texts)
@example("x" * 70_000)  # past the 16-bit AMF0 string: the long-string marker
def test_amf0_round_trip(text: str) -> None:
    assert parse_amf0_on_text_data(amf0_on_text_data(text)) == text


@FUZZ
@given(payloads)
def test_payload_through_both_carriers(payload: MetadataPayload) -> None:
    text = payload.to_json()
    [(_, via_id3)] = parse_id3_txxx(id3_txxx(text))
    via_amf0 = parse_amf0_on_text_data(amf0_on_text_data(text))
    for got in (via_id3, via_amf0):
        back = MetadataPayload.from_json(got)
        assert (back.seq, dict(back.levels)) == (payload.seq, dict(payload.levels))


def _parse_both(blob: bytes) -> None:
    for parser in (parse_id3_txxx, parse_amf0_on_text_data):
        try:
            parser(blob)
        except ValueError as exc:
            one_line_error(exc)


@FUZZ
@given(st.binary(max_size=512))
@example(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f")  # claims 256 MiB
@example(b"ID3\x04\x00\x00\x00\x00\x00\x0bTXXX\x00\x00\x00\x01\x00\x00\x01")  # UTF-16 text
@example(b"ID3\x04\x00\x00\x00\x00\x00\x0cTXXX\x00\x00\x00\x02\x00\x00\x03\xff")  # bad UTF-8
@example(b"\x02\x00\x0aonTextData\x03\x00\x04text\x0c\xff\xff\xff\xff")  # long string past end
@example(b"\x02\x00\x0aonTextData\x08\x00\x00\x00\x01")  # ECMA array, then nothing
def test_parsers_on_arbitrary_bytes(blob: bytes) -> None:
    _parse_both(blob)


@st.composite
def damaged_carriers(draw: st.DrawFn) -> bytes:
    """A valid carrier cut short, or with one byte replaced."""
    text = draw(texts)
    blob = draw(st.sampled_from([id3_txxx(text), amf0_on_text_data(text)]))
    if draw(st.booleans()):
        return blob[: draw(st.integers(min_value=0, max_value=len(blob) - 1))]
    i = draw(st.integers(min_value=0, max_value=len(blob) - 1))
    return blob[:i] + bytes((draw(st.integers(0, 255)),)) + blob[i + 1 :]


@FUZZ
@given(damaged_carriers())
def test_parsers_on_damaged_carriers(blob: bytes) -> None:
    _parse_both(blob)


@pytest.mark.parametrize("cut", [0, 3, 9, 12])
def test_truncated_id3_is_a_clear_error(cut: int) -> None:
    with pytest.raises(ValueError, match="ID3"):
        parse_id3_txxx(id3_txxx('{"s":1,"p":{}}')[:cut])
