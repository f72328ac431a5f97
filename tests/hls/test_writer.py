"""An LL-HLS stream written by PartedStreamWriter from real AAC, served by HlsOrigin,
read by a player's rules and by FFmpeg's HLS demuxer (a plain, non-LL client)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from mixer_ext.hls.origin import HlsOrigin
from mixer_ext.hls.playlist import parse_media_playlist, part_durations
from mixer_ext.hls.tspart import AudioPacket, Id3Packet, continuity_errors, starts_with_pat_pmt
from mixer_ext.hls.writer import PartedStreamWriter
from tests.support.env import require_program
from tests.support.llhls_util import demux, encode_tone, id3_tag

AacFixture = tuple[list[AudioPacket], bytes, int]


@pytest.fixture(scope="module")
def aac() -> AacFixture:
    return encode_tone()


def write_stream(directory: Path, aac: AacFixture, *, end: bool) -> PartedStreamWriter:
    packets, extradata, rate = aac
    w = PartedStreamWriter(directory, extradata=extradata, bit_rate=rate, window=None)
    directory.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(packets):
        if i % 23 == 0:  # a payload about every 0.5 s, at the pts of the audio it describes
            w.id3(Id3Packet(id3_tag(json.dumps({"s": i // 23})), p.pts))
        w.audio(p)
    w.close(end_of_stream=end)
    return w


def test_parts_segments_and_playlist_follow_the_rules(tmp_path: Path, aac: AacFixture) -> None:
    w = write_stream(tmp_path, aac, end=False)
    text = w.playlist_path.read_text()
    pl = parse_media_playlist(text)
    assert pl.part_target == 0.2 and pl.part_hold_back is not None
    assert pl.part_hold_back >= 3 * pl.part_target - 1e-9
    assert all(0 < d <= 0.2 for d in part_durations(pl))
    assert "#EXT-X-PRELOAD-HINT:TYPE=PART" in text
    assert [len(s.parts) for s in pl.segments[:-1]] == [5] * (len(pl.segments) - 1)
    for seg in pl.segments:
        blobs = [(tmp_path / p.uri).read_bytes() for p in seg.parts]
        assert (tmp_path / seg.uri).read_bytes() == b"".join(blobs)
        assert all(starts_with_pat_pmt(b) for b in blobs)
    whole = b"".join((tmp_path / s.uri).read_bytes() for s in pl.segments)
    assert continuity_errors(whole) == 0
    _frames, tags = demux(whole)
    assert [json.loads(t[t.index(b"{") : t.rindex(b"}") + 1])["s"] for t in tags] == list(
        range(len(tags))
    )
    assert len(tags) == (len(aac[0]) - 1) // 23 + 1
    # each tag is whole in one part: every part's tags demux alone, and they add up
    per_part = [
        len(demux((tmp_path / p.uri).read_bytes())[1]) for s in pl.segments for p in s.parts
    ]
    assert sum(per_part) == len(tags)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    origin = HlsOrigin(tmp_path)
    app = web.Application()
    origin.add_routes(app)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{runner.addresses[0][1]}/hls"
    finally:
        await runner.cleanup()


async def test_ffmpeg_hls_demuxer_plays_the_ll_playlist_to_its_end(
    served: tuple[Path, str], aac: AacFixture
) -> None:
    ffmpeg = require_program("ffmpeg")
    root, base = served
    write_stream(root / "s", aac, end=True)
    proc = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-v",
        "error",
        "-i",
        f"{base}/s/index.m3u8",
        "-f",
        "s16le",
        "-ac",
        "1",
        "-",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-500:]
    seconds = len(out) / 2 / 48000
    assert 1.8 < seconds < 2.2, seconds  # the whole 2 s, through ENDLIST


@pytest.mark.parametrize("tail_frames", [4, 0], ids=["short-tail", "on-a-part-boundary"])
def test_end_of_stream_publishes_the_last_part_before_endlist(
    tmp_path: Path, aac: AacFixture, tail_frames: int
) -> None:
    """hls.js 1.7.4 mis-tracks a live playlist that ends in the same update that brings
    the open segment's last part (it replays a part, or never loads the last one: the
    writer module's doc).  So at the end every part must first be listed in a live
    playlist, the ENDLIST playlist must change nothing else, and each of the last two
    publications must come a part's time after the one before (a player at the live
    edge has then loaded the part).  Fake clock: the pacing is not slept for real."""
    packets, extradata, rate = aac
    packets = packets[: 9 * 7 + tail_frames]  # 7 whole parts, then the short last one
    clock = [1000.0]
    published: list[tuple[float, str]] = []

    def sleep(seconds: float) -> None:
        assert seconds > 0
        clock[0] += seconds

    w = PartedStreamWriter(
        tmp_path,
        extradata=extradata,
        bit_rate=rate,
        window=6,
        monotonic=lambda: clock[0],
        sleep=sleep,
        on_change=lambda: published.append((clock[0], w.playlist_path.read_text())),
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    w.open()
    for p in packets:
        w.audio(p)
        clock[0] += 0.001  # a burst: faster than real time, as a flush is
    w.close(end_of_stream=True)

    (t_end, ended), (t_last, before) = published[-1], published[-2]
    assert ended.endswith("#EXT-X-ENDLIST\n") and "#EXT-X-ENDLIST" not in before
    final, live = parse_media_playlist(ended), parse_media_playlist(before)
    # the ENDLIST playlist lists exactly what the live one before it listed, all complete
    assert final.segments == live.segments and live.open_parts == []
    assert "PRELOAD-HINT" not in ended
    # and each part was first listed while the playlist was live
    seen_live = {
        p.uri for _t, text in published[:-1] for p in parse_media_playlist(text).open_parts
    } | {p.uri for s in live.segments for p in s.parts}
    assert {p.uri for s in final.segments for p in s.parts} <= seen_live
    # the last segment's EXTINF is its parts' sum, and holds every packet's samples
    last = final.segments[-1]
    assert last.duration == pytest.approx(sum(p.duration for p in last.parts), abs=1e-5)
    total = sum(s.duration for s in final.segments)
    assert total == pytest.approx((packets[-1].pts + packets[-1].duration - packets[0].pts) / 48000)
    # paced: ENDLIST a part after the last live playlist, which came a part after the
    # one before it (with no short tail, the last part was already published on time)
    part = 9 * 1024 / 48000
    assert t_end - t_last >= part - 1e-9
    if tail_frames:
        assert t_last - published[-3][0] >= part - 1e-9
