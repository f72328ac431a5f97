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

from mixer_ext.llhls.origin import HlsOrigin
from mixer_ext.llhls.playlist import parse_media_playlist, part_durations
from mixer_ext.llhls.tspart import AudioPacket, Id3Packet, continuity_errors, starts_with_pat_pmt
from mixer_ext.llhls.writer import PartedStreamWriter
from tests.conftest import require_program
from tests.llhls_util import demux, encode_tone, id3_tag

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
