"""LL-HLS through the product: ``OutputPipeline`` -> ``HlsOutput`` -> ``HttpEndpoint``.

The real encoder thread, HLS output and HTTP endpoint on 127.0.0.1 (the mixer is replaced
by ``ProductStream.feed``, which ticks like the mixer clock).  What a client checks: the
playlist it downloads carries valid LL-HLS tags, a blocking reload for the next part comes
back once that part exists (about one part target, not a segment), the hinted part is
served whole, a plain HLS client still gets whole decodable segments, and the end is
``#EXT-X-ENDLIST`` with no preload hint.  With ``MIXER_HLS_LOW_LATENCY=false`` the
playlist has no LL-HLS tags.  (The player page with hls.js lowLatencyMode on this same
stream: tests/browser/test_player_sync.py.)
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from mixer_ext.hls.playlist import parse_media_playlist
from mixer_ext.hls.tspart import starts_with_pat_pmt
from tests.support.llhls_util import check_blocking_reload, decoded_samples, get
from tests.support.player_util import THREE_TALKERS
from tests.support.product_stream import ProductStream


@pytest.mark.slow
async def test_low_latency_hls_through_the_product(tmp_path: Path) -> None:
    stream = ProductStream(tmp_path / "hls")
    await stream.start()
    feeding = asyncio.create_task(stream.feed(THREE_TALKERS, seconds=7.0), name="feed")
    base = stream.url + "hls/main/"
    try:
        async with aiohttp.ClientSession() as session:
            while not stream.playlist.exists():  # noqa: ASYNC110 - the output's file
                await asyncio.sleep(0.05)
            status, headers, body = await get(session, base + "index.m3u8")
            assert status == 200 and headers["Cache-Control"] == "no-cache"
            text = body.decode()
            assert text.startswith("#EXTM3U\n#EXT-X-VERSION:10\n"), text
            assert re.search(r"^#EXT-X-PART-INF:PART-TARGET=0\.2(0*)?$", text, re.M), text
            assert "CAN-BLOCK-RELOAD=YES" in text and "PART-HOLD-BACK=" in text, text
            parsed = parse_media_playlist(text)
            assert parsed.open_parts or parsed.segments, text

            await check_blocking_reload(session, base)

            await feeding
            await stream.end()
            status, _h, body = await get(session, base + "index.m3u8?_HLS_msn=999&_HLS_part=0")
            text = body.decode()
            assert status == 200 and text.rstrip().endswith("#EXT-X-ENDLIST"), text
            assert "PRELOAD-HINT" not in text

            # A plain HLS client: whole segments, each decodable alone.
            segments = re.findall(r"^(seg-\d{6}\.ts)$", text, re.M)
            assert len(segments) >= 3, text
            total = 0
            for name in segments:
                status, _h, data = await get(session, base + name)
                assert status == 200 and starts_with_pat_pmt(data)
                total += decoded_samples(data)
            assert total >= 6.5 * 48000, total  # the 7 s fed, give or take the window
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        await stream.stop()
    assert stream.losses() == {"encoder_dropped_frames": 0, "hls_dropped_packets": 0}


async def test_low_latency_off_writes_plain_hls(tmp_path: Path) -> None:
    stream = ProductStream(tmp_path / "hls", low_latency=False)
    await stream.start()
    try:
        await stream.feed(THREE_TALKERS, seconds=3.0, preroll_seconds=3.0)
        await stream.end()
        async with aiohttp.ClientSession() as session:
            status, _h, body = await get(session, stream.url + "hls/main/index.m3u8")
            async with session.get(stream.url + "config.json") as r:
                assert (await r.json())["lowLatency"] is False
    finally:
        await stream.stop()
    text = body.decode()
    assert status == 200 and "#EXT-X-VERSION:3" in text and "#EXT-X-ENDLIST" in text, text
    assert "EXT-X-PART" not in text and "PRELOAD-HINT" not in text, text
    assert not list((tmp_path / "hls" / "main").glob("part-*"))
