"""Payload JSON and its two carriers, byte-exact against hand-checked vectors."""

from __future__ import annotations

import pytest

from mixer_ext.core.payload import MetadataPayload
from mixer_ext.outputs.carriers import (
    amf0_on_text_data,
    id3_txxx,
    parse_amf0_on_text_data,
    parse_id3_txxx,
)


def test_payload_json_is_compact_and_ordered() -> None:
    p = MetadataPayload(seq=23, levels={"alice": 300, "bob": -1})
    assert p.to_json() == '{"s":23,"p":{"alice":{"v":300},"bob":{"v":-1}}}'
    back = MetadataPayload.from_json(p.to_json(), pts=480)
    assert back == MetadataPayload(seq=23, levels={"alice": 300, "bob": -1}, pts=480)


@pytest.mark.parametrize("level", [-2, 32_768])
def test_payload_rejects_levels_out_of_range(level: int) -> None:
    with pytest.raises(ValueError):
        MetadataPayload(seq=0, levels={"a": level})


@pytest.mark.parametrize("text", ["", "{", '{"s":"1","p":{}}', '{"s":1}', '{"s":1,"p":{"a":1}}'])
def test_malformed_payload_json_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        MetadataPayload.from_json(text)


def test_id3_vector() -> None:
    # header: "ID3" v2.4.0, flags 0, syncsafe size 26; frame TXXX size 16, flags 0;
    # body: encoding 3 (UTF-8), empty description + NUL, then the 14-byte value.
    value = '{"s":0,"p":{}}'
    expected = (
        b"ID3\x04\x00\x00\x00\x00\x00\x1a"
        + b"TXXX\x00\x00\x00\x10\x00\x00"
        + b"\x03\x00"
        + value.encode()
    )
    assert id3_txxx(value) == expected
    assert parse_id3_txxx(expected) == [("", value)]


def test_id3_syncsafe_sizes_above_127() -> None:
    value = "x" * 200  # frame body 202 = 0x01 0x4a syncsafe; tag 212 = 0x01 0x54
    tag = id3_txxx(value)
    assert tag[6:10] == b"\x00\x00\x01\x54"
    assert tag[14:18] == b"\x00\x00\x01\x4a"
    assert parse_id3_txxx(tag) == [("", value)]


def test_id3_unicode_identity_round_trips() -> None:
    p = MetadataPayload(seq=1, levels={"zoë 🎤": 12})
    assert parse_id3_txxx(id3_txxx(p.to_json())) == [("", p.to_json())]


def test_amf0_vector() -> None:
    expected = (
        b"\x02\x00\x0aonTextData"
        + b"\x03"
        + b"\x00\x04type\x02\x00\x04Text"
        + b"\x00\x04text\x02\x00\x01x"
        + b"\x00\x00\x09"
    )
    assert amf0_on_text_data("x") == expected
    assert parse_amf0_on_text_data(expected) == "x"


def test_amf0_long_string() -> None:
    text = "y" * 70_000
    body = amf0_on_text_data(text)
    assert b"\x0c\x00\x01\x11\x70" in body  # long-string marker + u32 length 70000
    assert parse_amf0_on_text_data(body) == text


@pytest.mark.parametrize("cut", [1, 5, 20, 40])
def test_truncated_carriers_are_refused(cut: int) -> None:
    with pytest.raises(ValueError):
        parse_amf0_on_text_data(amf0_on_text_data('{"s":1,"p":{}}')[:cut])
    with pytest.raises(ValueError):
        parse_id3_txxx(id3_txxx('{"s":1,"p":{"abc":{"v":1}}}')[:cut])
