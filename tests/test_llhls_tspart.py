"""TS partial segments muxed by real PyAV/libavformat and read back by its demuxer."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from mixer_ext.llhls.tspart import (
    AudioPacket,
    ContinuityCounters,
    Id3Packet,
    continuity_errors,
    mux_part,
    starts_with_pat_pmt,
)

RATE = 48000
FRAMES_PER_PART = 9


def id3_tag(text: str) -> bytes:
    """A minimal ID3v2.4 tag with one TXXX frame (enough for the demuxer to carry)."""

    def syncsafe(n: int) -> bytes:
        return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])

    body = b"\x03" + b"\x00" + text.encode() + b"\x00"
    frame = b"TXXX" + syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + syncsafe(len(frame)) + frame


@pytest.fixture(scope="module")
def aac() -> tuple[list[AudioPacket], bytes, int]:
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = RATE, "stereo", "fltp"  # type: ignore[attr-defined]
    enc.bit_rate = 128000
    enc.time_base = Fraction(1, RATE)
    enc.open()
    packets: list[AudioPacket] = []
    t = np.arange(RATE * 2) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(0, len(tone), 1024):
        frame = av.AudioFrame.from_ndarray(np.stack([tone[i : i + 1024]] * 2), "fltp", "stereo")
        frame.sample_rate, frame.pts = RATE, i
        for p in enc.encode(frame):  # type: ignore[attr-defined]
            packets.append(AudioPacket(bytes(p), int(p.pts), int(p.duration or 1024)))
    return packets, bytes(enc.extradata or b""), 128000


def parts_of(
    aac: tuple[list[AudioPacket], bytes, int], counters: ContinuityCounters | None
) -> tuple[list[bytes], list[Id3Packet]]:
    packets, extradata, rate = aac
    parts: list[bytes] = []
    tags: list[Id3Packet] = []
    for n, i in enumerate(range(0, len(packets) - FRAMES_PER_PART, FRAMES_PER_PART)):
        chunk = packets[i : i + FRAMES_PER_PART]
        tag = [Id3Packet(id3_tag(f'{{"s":{n}}}'), chunk[4].pts)] if n % 2 == 0 else []
        tags.extend(tag)
        data = mux_part(chunk, tag, extradata=extradata, bit_rate=rate)
        parts.append(counters.rewrite(data) if counters else data)
    return parts, tags


def demux(data: bytes) -> tuple[int, list[bytes]]:
    frames, id3 = 0, []
    with av.open(io.BytesIO(data), format="mpegts") as c:
        for packet in c.demux():
            if packet.stream.type == "data" and packet.size:
                id3.append(bytes(packet))
            elif packet.stream.type == "audio":
                frames += len(packet.decode())
    return frames, id3


def test_each_part_is_self_contained(aac: tuple[list[AudioPacket], bytes, int]) -> None:
    parts, _ = parts_of(aac, ContinuityCounters())
    assert len(parts) >= 8
    for n, part in enumerate(parts):
        assert len(part) % 188 == 0
        assert starts_with_pat_pmt(part), n
        assert not starts_with_pat_pmt(part[3 * 188 :])  # SDT, PAT, PMT gone: not alone
        frames, id3 = demux(part)
        assert frames >= FRAMES_PER_PART - 1  # the decoder may hold one frame back
        assert len(id3) == (1 if n % 2 == 0 else 0)  # the tag is whole inside its part


def test_parent_is_one_continuous_stream(aac: tuple[list[AudioPacket], bytes, int]) -> None:
    parts, tags = parts_of(aac, ContinuityCounters())
    parent = b"".join(parts)
    assert continuity_errors(parent) == 0
    frames, id3 = demux(parent)
    assert frames >= len(parts) * FRAMES_PER_PART - 1
    assert id3 == [t.data for t in tags]


def test_without_renumbering_the_parts_break_continuity(
    aac: tuple[list[AudioPacket], bytes, int],
) -> None:
    parts, _ = parts_of(aac, None)
    assert continuity_errors(b"".join(parts)) >= len(parts) - 1


def test_rewrite_refuses_what_is_not_ts() -> None:
    with pytest.raises(ValueError, match="whole number"):
        ContinuityCounters().rewrite(b"\x47" * 100)
    with pytest.raises(ValueError, match="sync byte"):
        ContinuityCounters().rewrite(b"\x00" * 188)
