"""MPEG-TS partial segments: each part muxed alone in memory, continuity kept across parts.

An LL-HLS part must be demuxable alone (a player may start on any part), so
each part is its own small TS container muxed by PyAV into a ``BytesIO``:
PAT and PMT come first, packets are whole, and an ID3 PES muxed into a part
is whole inside it.  Muxed separately, every part would restart its
continuity counters at 0, and the parent segment (the parts concatenated)
would show a continuity error at every part boundary to a strict demuxer;
``ContinuityCounters`` renumbers the 4-bit counter of each PID across the
parts of a stream so the concatenation is one continuous TS.

No file I/O here: the caller writes the bytes (temp file + rename).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import av


class _FrameSizeNoise(logging.Filter):
    """Drop libavformat's "frame size not set" warning for our pre-encoded AAC stream.

    Our TS streams are declared from the encoder's parameters without an
    opened codec, so every part and segment would log it; it is harmless (AAC
    frames are always 1024 samples).  Only that one message is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "frame size not set" not in record.getMessage()


logging.getLogger("libav.mpegts").addFilter(_FrameSizeNoise())

TS_PACKET = 188
SYNC = 0x47
PAT_PID = 0
#: libavformat options for a part (the same as for the HLS output's segments)
PART_OPTIONS = {"max_interleave_delta": "1", "avoid_negative_ts": "disabled"}


@dataclass(frozen=True, slots=True)
class AudioPacket:
    data: bytes
    #: samples at 48 kHz
    pts: int
    duration: int


@dataclass(frozen=True, slots=True)
class Id3Packet:
    data: bytes
    pts: int


def mux_part(
    audio: Iterable[AudioPacket],
    id3: Iterable[Id3Packet],
    *,
    extradata: bytes,
    bit_rate: int,
    sample_rate: int = 48000,
) -> bytes:
    """One self-contained TS (AAC stream + ``timed_id3`` stream) holding these packets."""
    from fractions import Fraction

    tb = Fraction(1, sample_rate)
    buf = io.BytesIO()
    container: Any = av.open(buf, "w", format="mpegts", options=PART_OPTIONS)
    try:
        stream = container.add_stream("aac", rate=sample_rate, layout="stereo")
        stream.codec_context.extradata = extradata
        stream.codec_context.bit_rate = bit_rate
        stream.time_base = tb
        data_stream = container.add_data_stream("timed_id3")
        data_stream.time_base = tb
        items: list[tuple[int, int, Any]] = []
        for a in audio:
            p = av.Packet(a.data)
            p.pts = p.dts = a.pts
            p.duration = a.duration
            p.time_base = tb
            p.stream = stream
            items.append((a.pts, 1, p))
        for t in id3:
            p = av.Packet(t.data)
            p.pts = p.dts = t.pts
            p.time_base = tb
            p.stream = data_stream
            items.append((t.pts, 0, p))
        for _pts, _kind, packet in sorted(items, key=lambda x: (x[0], x[1])):
            container.mux(packet)
    finally:
        container.close()
    return buf.getvalue()


@dataclass
class ContinuityCounters:
    """Renumbers TS continuity counters so consecutive parts form one continuous stream."""

    _next: dict[int, int] = field(default_factory=dict)

    def rewrite(self, data: bytes) -> bytes:
        if len(data) % TS_PACKET:
            raise ValueError("not a whole number of TS packets")
        out = bytearray(data)
        for off in range(0, len(out), TS_PACKET):
            if out[off] != SYNC:
                raise ValueError(f"no TS sync byte at offset {off}")
            pid = ((out[off + 1] & 0x1F) << 8) | out[off + 2]
            if pid == 0x1FFF:
                continue  # null packets carry no counter
            has_payload = out[off + 3] & 0x10
            cc = self._next.get(pid, 0)
            if has_payload:
                self._next[pid] = (cc + 1) & 0x0F
            else:
                cc = (cc - 1) & 0x0F  # no payload: repeats the previous value
            out[off + 3] = (out[off + 3] & 0xF0) | cc
        return bytes(out)


def packet_pids(data: bytes) -> list[int]:
    """The PID of every TS packet, in order."""
    return [((data[o + 1] & 0x1F) << 8) | data[o + 2] for o in range(0, len(data) - 187, TS_PACKET)]


def pmt_pids(data: bytes) -> set[int]:
    """PMT PIDs announced by the PATs in ``data``."""
    found: set[int] = set()
    for o in range(0, len(data) - 187, TS_PACKET):
        pid = ((data[o + 1] & 0x1F) << 8) | data[o + 2]
        if pid != PAT_PID or not data[o + 1] & 0x40:
            continue
        payload = _payload(data[o : o + TS_PACKET])
        section = payload[1 + payload[0] :]  # skip pointer_field
        length = ((section[1] & 0x0F) << 8) | section[2]
        programs = section[8 : 3 + length - 4]
        for i in range(0, len(programs) - 3, 4):
            number = (programs[i] << 8) | programs[i + 1]
            if number:
                found.add(((programs[i + 2] & 0x1F) << 8) | programs[i + 3])
    return found


def starts_with_pat_pmt(data: bytes) -> bool:
    """Whether a PAT and then its PMT come before any elementary-stream packet."""
    pmts = pmt_pids(data[: 4 * TS_PACKET])
    seen_pat = False
    for pid in packet_pids(data):
        if pid == PAT_PID:
            seen_pat = True
        elif pid in pmts:
            return seen_pat
        elif pid not in (0x11, 0x1FFF):  # SDT and null packets may come first
            return False
    return False


def continuity_errors(data: bytes) -> int:
    """Count continuity-counter jumps (per PID, payload packets), as a strict demuxer would."""
    last: dict[int, int] = {}
    errors = 0
    for o in range(0, len(data) - 187, TS_PACKET):
        pid = ((data[o + 1] & 0x1F) << 8) | data[o + 2]
        if pid == 0x1FFF or not data[o + 3] & 0x10:
            continue
        cc = data[o + 3] & 0x0F
        if pid in last and cc != (last[pid] + 1) & 0x0F:
            errors += 1
        last[pid] = cc
    return errors


def _payload(packet: bytes) -> bytes:
    afc = (packet[3] >> 4) & 0x3
    start = 4
    if afc & 0x2:
        start += 1 + packet[4]
    return packet[start:] if afc & 0x1 else b""
