"""The payloads' two in-band carriers, with parsers beside the builders.

* HLS (MPEG-TS ``timed_id3`` stream): an ID3v2.4 tag holding one ``TXXX``
  frame, UTF-8, empty description, value = the payload JSON.
* RTMP/FLV: an AMF0 script-data body ``"onTextData", {type: "Text", text: JSON}``.

An app's payload (``AppPayload``) rides the same carriers, told apart by one marker:
its ``TXXX`` is described ``app`` (value = the app's string, verbatim), its
``onTextData`` object has a third property ``source: "app"``.  A player that only
reads undescribed ``TXXX`` frames (the mixer's) never mistakes one for the other.

The parsers are used by tests and by anything that reads a stream back.
"""

from __future__ import annotations

import struct

from mixer_ext.core.payload import APP_SOURCE, AppPayload, TimedPayload


# --------------------------------------------------------------------------- ID3v2.4
def _syncsafe(n: int) -> bytes:
    if not 0 <= n < 1 << 28:
        raise ValueError("ID3 size out of range")
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _unsyncsafe(b: bytes) -> int:
    if any(x & 0x80 for x in b):
        raise ValueError("ID3 size is not syncsafe")
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def id3_txxx(value: str, description: str = "") -> bytes:
    """An ID3v2.4 tag with a single TXXX frame (UTF-8), no padding, no footer."""
    body = b"\x03" + description.encode("utf-8") + b"\x00" + value.encode("utf-8")
    frame = b"TXXX" + _syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def parse_id3_txxx(tag: bytes) -> list[tuple[str, str]]:
    """Every TXXX frame of an ID3v2.3/2.4 tag as (description, value)."""
    if len(tag) < 10 or tag[:3] != b"ID3":
        raise ValueError("not an ID3v2 tag")
    major = tag[3]
    if major not in (3, 4):
        raise ValueError(f"unsupported ID3v2.{major}")
    size = _unsyncsafe(tag[6:10])
    end = 10 + size
    if len(tag) < end:
        raise ValueError("ID3 tag is truncated")
    pos = 10
    out: list[tuple[str, str]] = []
    while pos + 10 <= end:
        fid = tag[pos : pos + 4]
        if fid == b"\x00\x00\x00\x00":
            break  # padding
        raw = tag[pos + 4 : pos + 8]
        fsize = _unsyncsafe(raw) if major == 4 else struct.unpack(">I", raw)[0]
        body = tag[pos + 10 : pos + 10 + fsize]
        if len(body) != fsize:
            raise ValueError("ID3 frame is truncated")
        if fid == b"TXXX" and body:
            enc = body[0]
            if enc != 3:
                raise ValueError(f"TXXX text encoding {enc} not supported (want UTF-8)")
            desc, _, value = body[1:].partition(b"\x00")
            out.append((desc.decode("utf-8"), value.rstrip(b"\x00").decode("utf-8")))
        pos += 10 + fsize
    return out


# --------------------------------------------------------------------------- AMF0
_AMF0_STRING = 0x02
_AMF0_OBJECT = 0x03
_AMF0_ECMA_ARRAY = 0x08
_AMF0_OBJECT_END = b"\x00\x00\x09"
_AMF0_LONG_STRING = 0x0C


def _amf0_key(key: str) -> bytes:
    raw = key.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def _amf0_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) <= 0xFFFF:
        return bytes((_AMF0_STRING,)) + struct.pack(">H", len(raw)) + raw
    return bytes((_AMF0_LONG_STRING,)) + struct.pack(">I", len(raw)) + raw


def amf0_on_text_data(text: str, source: str | None = None) -> bytes:
    """The FLV script-data body ``"onTextData", {"type": "Text", "text": text}``
    (plus ``"source": source`` when given)."""
    return (
        _amf0_string("onTextData")
        + bytes((_AMF0_OBJECT,))
        + _amf0_key("type")
        + _amf0_string("Text")
        + _amf0_key("text")
        + _amf0_string(text)
        + (b"" if source is None else _amf0_key("source") + _amf0_string(source))
        + _AMF0_OBJECT_END
    )


def id3_for(payload: TimedPayload) -> bytes:
    """The ID3 tag that carries ``payload`` in HLS (and ``.ts`` recordings)."""
    if isinstance(payload, AppPayload):
        return id3_txxx(payload.text, APP_SOURCE)
    return id3_txxx(payload.to_json())


def amf0_for(payload: TimedPayload) -> bytes:
    """The ``onTextData`` body that carries ``payload`` over RTMP."""
    if isinstance(payload, AppPayload):
        return amf0_on_text_data(payload.text, APP_SOURCE)
    return amf0_on_text_data(payload.to_json())


def parse_amf0_on_text_data(body: bytes) -> str:
    """The ``text`` of an ``onTextData`` body (object or ECMA array form)."""
    return parse_amf0_text_fields(body)["text"]


def parse_amf0_text_fields(body: bytes) -> dict[str, str]:
    """Every string property of an ``onTextData`` body (``text`` among them)."""

    def read_string(pos: int) -> tuple[str, int]:
        marker = body[pos]
        if marker == _AMF0_STRING:
            (n,) = struct.unpack_from(">H", body, pos + 1)
            start = pos + 3
        elif marker == _AMF0_LONG_STRING:
            (n,) = struct.unpack_from(">I", body, pos + 1)
            start = pos + 5
        else:
            raise ValueError(f"AMF0 marker {marker:#x} where a string was expected")
        if start + n > len(body):
            raise ValueError("AMF0 string is truncated")
        return body[start : start + n].decode("utf-8"), start + n

    try:
        name, pos = read_string(0)
        if name != "onTextData":
            raise ValueError(f"not onTextData but {name!r}")
        marker = body[pos]
        pos += 1
        if marker == _AMF0_ECMA_ARRAY:
            pos += 4
        elif marker != _AMF0_OBJECT:
            raise ValueError(f"AMF0 marker {marker:#x} where an object was expected")
        fields: dict[str, str] = {}
        while body[pos : pos + 3] != _AMF0_OBJECT_END:
            (klen,) = struct.unpack_from(">H", body, pos)
            key = body[pos + 2 : pos + 2 + klen].decode("utf-8")
            value, pos = read_string(pos + 2 + klen)
            fields[key] = value
        if "text" not in fields:
            raise ValueError("onTextData has no 'text'")
        return fields
    except (IndexError, struct.error) as exc:
        raise ValueError(f"AMF0 body is truncated: {exc}") from None
