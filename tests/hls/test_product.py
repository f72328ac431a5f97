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
import io
import re
import time
from pathlib import Path

import aiohttp
import av

from mixer_ext.hls.playlist import parse_media_playlist
from mixer_ext.hls.tspart import starts_with_pat_pmt
from tests.support.player_util import THREE_TALKERS
from tests.support.product_stream import ProductStream

#: a part is 9 AAC frames = 0.192 s; what a blocking reload may take beyond that
#: (encoder queue, output thread, a loaded 2-core machine)
MARGIN = 0.35
_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-(\d+)-(\d+)\.ts"')


def decoded_samples(data: bytes) -> int:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        return sum(f.samples for f in c.decode(audio=0))


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url) as r:
        return r.status, dict(r.headers), await r.read()


async def check_blocking_reload(session: aiohttp.ClientSession, base: str) -> None:
    """Blocking reloads for the hinted part return once it exists (5 in a row, each
    within a part + ``MARGIN``), and the hinted part itself is held then served whole."""
    # Blocking reload: ask for the hinted (not yet written) part, five times in a row.
    waits = []
    for _ in range(5):
        _s, _h, body = await get(session, base + "index.m3u8")
        hint = _HINT.search(body.decode())
        assert hint, body.decode()
        msn, part = int(hint[1]), int(hint[2])
        t0 = time.monotonic()
        status, headers, body = await get(
            session, f"{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        )
        waits.append(time.monotonic() - t0)
        assert status == 200, body
        assert f"part-{msn:06d}-{part}.ts" in body.decode(), body.decode()
    assert max(waits) < 0.192 + MARGIN, f"blocking reloads took {waits}"
    assert sum(waits) / len(waits) > 0.02, f"did not block at all: {waits}"

    # The hinted part, requested before it exists: held, then served whole.
    _s, _h, body = await get(session, base + "index.m3u8")
    hint = _HINT.search(body.decode())
    assert hint
    t0 = time.monotonic()
    status, headers, data = await get(session, base + f"part-{hint[1]}-{hint[2]}.ts")
    took = time.monotonic() - t0
    assert status == 200 and headers["Content-Type"] == "video/mp2t"
    assert "immutable" in headers["Cache-Control"]
    assert took < 0.192 + MARGIN, took
    assert starts_with_pat_pmt(data)
    assert decoded_samples(data) in range(8 * 1024, 9 * 1024 + 1)  # one part


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
