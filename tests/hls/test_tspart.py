"""TS partial segments muxed by real PyAV/libavformat and read back by its demuxer."""

from __future__ import annotations

import pytest

from mixer_ext.hls.tspart import (
    AudioPacket,
    ContinuityCounters,
    Id3Packet,
    continuity_errors,
    mux_part,
    starts_with_pat_pmt,
)
from tests.support.llhls_util import FRAMES_PER_PART, demux, encode_tone, id3_tag


@pytest.fixture(scope="module")
def aac() -> tuple[list[AudioPacket], bytes, int]:
    return encode_tone()


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
