"""The LL-HLS origin over a real aiohttp server on loopback, fed by a writer of parts on disk.

The writer here is a stand-in for the HLS output (it writes dummy part bytes and the
playlist the way ``HlsOutput`` does: whole files renamed into place); the worker's
real output is covered by the LL-HLS end-to-end tests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mixer_ext.hls.origin import HlsOrigin
from mixer_ext.hls.playlist import MediaPlaylist, Part, Segment

PART_TARGET = 0.2
PART = 0.192


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FakeWriter:
    """Writes part files and the playlist every PART seconds, 5 parts per segment."""

    def __init__(
        self, directory: Path, *, window: int | None = 6, notify: Callable[[], None] | None = None
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pl = MediaPlaylist(
            1.0, window=window, part_target=PART_TARGET, delta_updates=window is None
        )
        self.notify = notify
        self.msn, self.part = 1, 0
        self.t0 = datetime.now(UTC)
        self.part_times: dict[tuple[int, int], float] = {}
        self.pl.preload_hint = self.uri(1, 0)

    @staticmethod
    def uri(msn: int, i: int) -> str:
        return f"part-{msn:06d}-{i}.ts"

    def step(self) -> None:
        uri = self.uri(self.msn, self.part)
        _atomic(self.dir / uri, f"{uri}".encode() * 10)
        start = self.t0 + timedelta(seconds=(self.msn - 1) * 5 * PART)
        self.pl.add_part(Part(uri, PART), segment_start=start)
        self.part_times[(self.msn, self.part)] = time.monotonic()
        self.part += 1
        if self.part == 5:
            seg = f"seg-{self.msn:06d}.ts"
            body = b"".join((self.dir / p.uri).read_bytes() for p in self.pl.open_parts)
            _atomic(self.dir / seg, body)
            self.pl.add(Segment(seg, 5 * PART, start, self.msn))
            self.msn, self.part = self.msn + 1, 0
        self.pl.preload_hint = self.uri(self.msn, self.part)
        self.write()

    def write(self) -> None:
        _atomic(self.dir / "index.m3u8", self.pl.render().encode())
        if self.notify is not None:
            self.notify()

    async def run(self, parts: int) -> None:
        for _ in range(parts):
            await asyncio.sleep(PART)
            self.step()


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[tuple[HlsOrigin, str]]:
    org = HlsOrigin(tmp_path, cors_origin="https://listen.example", max_held_per_client=3)
    app = web.Application()
    org.add_routes(app)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield org, f"http://127.0.0.1:{port}/hls"
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_blocking_request_returns_once_the_part_exists(
    tmp_path: Path, origin: tuple[HlsOrigin, str]
) -> None:
    org, base = origin
    w = FakeWriter(tmp_path / "a", notify=lambda: org.notify_threadsafe("a"))
    w.step()
    task = asyncio.create_task(w.run(12))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/a/index.m3u8") as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert r.headers["Access-Control-Allow-Origin"] == "https://listen.example"
            assert "#EXT-X-PART-INF:PART-TARGET=0.2" in await r.text()
        lags = []
        for msn, part in [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1)]:
            sent = time.monotonic()
            async with s.get(f"{base}/a/index.m3u8?_HLS_msn={msn}&_HLS_part={part}") as r:
                text = await r.text()
                got = time.monotonic()
            assert r.status == 200
            key = (msn + 1, 0) if part == 5 else (msn, part)
            assert f'URI="part-{key[0]:06d}-{key[1]}.ts"' in text
            assert key in w.part_times and w.part_times[key] <= got
            lags.append(got - max(sent, w.part_times[key]))
            assert got - sent <= PART_TARGET + 0.15, (msn, part, lags)  # next part + margin
        assert max(lags) < 0.1, lags
        async with s.get(f"{base}/a/seg-000001.ts") as r:
            assert r.status == 200 and r.headers["Cache-Control"].endswith("immutable")
            assert await r.read() == b"".join(
                (tmp_path / "a" / FakeWriter.uri(1, i)).read_bytes() for i in range(5)
            )
    await task


async def test_changes_are_seen_without_notify(
    tmp_path: Path, origin: tuple[HlsOrigin, str]
) -> None:
    _, base = origin  # a writer in another process: only the poller sees its changes
    w = FakeWriter(tmp_path / "b")
    w.step()
    task = asyncio.create_task(w.run(3))
    async with aiohttp.ClientSession() as s:
        sent = time.monotonic()
        async with s.get(f"{base}/b/index.m3u8?_HLS_msn=1&_HLS_part=2") as r:
            assert r.status == 200 and 'part-000001-2.ts"' in await r.text()
        assert time.monotonic() - sent < 2 * PART + 0.1
    await task


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("_HLS_part=1", 400),
        ("_HLS_msn=x", 400),
        ("_HLS_msn=1&_HLS_part=-1", 400),
        ("_HLS_msn=9", 400),
        ("_HLS_msn=2&_HLS_part=40", 400),
        ("_HLS_skip=maybe", 400),
    ],
)
async def test_bad_directives_get_400(
    tmp_path: Path, origin: tuple[HlsOrigin, str], query: str, status: int
) -> None:
    _, base = origin
    FakeWriter(tmp_path / "c").step()
    async with aiohttp.ClientSession() as s, s.get(f"{base}/c/index.m3u8?{query}") as r:
        assert r.status == status
        assert "_HLS_" in await r.text()


@pytest.mark.slow
async def test_held_requests_are_bounded_and_time_out(
    tmp_path: Path, origin: tuple[HlsOrigin, str]
) -> None:
    _, base = origin
    FakeWriter(tmp_path / "d").step()  # and then nothing more: a stalled writer
    async with aiohttp.ClientSession() as s:
        url = f"{base}/d/index.m3u8?_HLS_msn=1&_HLS_part=3"
        held = [asyncio.create_task(s.get(url)) for _ in range(3)]
        await asyncio.sleep(0.2)
        async with s.get(url) as r:
            assert r.status == 429  # max_held_per_client=3
        sent = time.monotonic()
        statuses = [(await t).status for t in held]
        assert statuses == [503] * 3
        assert 2.5 < time.monotonic() - sent + 0.2 < 3.6  # 3 x TARGETDURATION


async def test_hinted_part_is_held_until_complete_and_unknown_is_404(
    tmp_path: Path, origin: tuple[HlsOrigin, str]
) -> None:
    org, base = origin
    w = FakeWriter(tmp_path / "e", notify=lambda: org.notify_threadsafe("e"))
    w.step()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/e/part-000001-5.ts") as r:
            assert r.status == 404  # not the hint
        async with s.get(f"{base}/e/../x/index.m3u8") as r:
            assert r.status == 404
        fetch = asyncio.create_task(s.get(f"{base}/e/part-000001-1.ts"))
        await asyncio.sleep(0.3)
        assert not fetch.done()
        w.step()
        async with await fetch as r:
            assert r.status == 200 and await r.read() == b"part-000001-1.ts" * 10


async def test_endlist_ignores_directives_and_event_playlists_offer_delta_updates(
    tmp_path: Path, origin: tuple[HlsOrigin, str]
) -> None:
    _, base = origin
    w = FakeWriter(tmp_path / "f", window=None)
    for _ in range(5 * 10):
        w.step()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/f/index.m3u8?_HLS_msn=10&_HLS_part=4&_HLS_skip=YES") as r:
            text = await r.text()
        assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n" in text and "seg-000003.ts" not in text
        async with s.get(f"{base}/f/index.m3u8") as r:
            assert "seg-000001.ts" in await r.text()
        w.pl.ended = True
        w.write()
        sent = time.monotonic()
        async with s.get(f"{base}/f/index.m3u8?_HLS_msn=12&_HLS_part=1") as r:
            assert r.status == 200 and (await r.text()).endswith("#EXT-X-ENDLIST\n")
        assert time.monotonic() - sent < 0.5
