"""The worker's HTTP endpoint: HLS with the right headers, player, health, live metadata."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.serve.http import HttpEndpoint
from mixer_ext.settings import Settings
from mixer_ext.testing.feed import feed, payload_for


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    player = tmp_path / "player"
    (player / "vendor").mkdir(parents=True)
    (player / "index.html").write_text("<!doctype html><title>player</title>")
    (player / "vendor" / "hls.min.js").write_text("/* hls */")
    (tmp_path / "secret.txt").write_text("top secret")
    (tmp_path / "hls").mkdir()
    return tmp_path / "hls", player


async def raw_status(port: int, raw_path: str) -> int:
    """Status code for a request line sent byte for byte (no client-side normalization)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    line = await reader.readline()
    body = await reader.read()
    writer.close()
    assert b"top secret" not in body and b"root:" not in body
    return int(line.split()[1])


@pytest.mark.slow
async def test_endpoint_serves_hls_player_health_and_metadata(dirs: tuple[Path, Path]) -> None:
    hls_dir, player = dirs
    settings = Settings(hls_dir=hls_dir, http_port=0, hls_segment_duration=0.5)
    pipeline = OutputPipeline([parse_output("hls:main")], 64, settings)
    await pipeline.start()
    http = HttpEndpoint(settings, hls_dir, player, "main", pipeline=pipeline)
    await http.start()
    base = f"http://127.0.0.1:{http.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as r:
                assert r.status == 503  # not in the room yet
            async with session.ws_connect(f"{base}/ws/metadata") as ws:
                await asyncio.sleep(0.1)  # the server has registered the client
                tick = await feed(pipeline, 2.0)
                got = [
                    MetadataPayload.from_json((await ws.receive(timeout=5)).data) for _ in range(4)
                ]
                assert [p.seq for p in got] == [0, 1, 2, 3]
                assert got[1].levels == {"alice": 37, "bob": -1}
            await asyncio.sleep(0.3)  # let the HLS thread write its segments
            http.set_ready(True)
            async with session.get(f"{base}/readyz") as r:
                assert r.status == 200

            async with session.get(f"{base}/hls/main/index.m3u8") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
                assert r.headers["Cache-Control"] == "no-cache"
                playlist = await r.text()
            seg = next(ln for ln in playlist.splitlines() if ln.endswith(".ts"))
            async with session.get(f"{base}/hls/main/{seg}") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "video/mp2t"
                assert (await r.read())[0] == 0x47

            async with session.get(f"{base}/") as r:
                assert r.status == 200 and "text/html" in r.headers["Content-Type"]
                assert "player" in await r.text()
            async with session.get(f"{base}/config.json") as r:
                assert await r.json() == {
                    "src": "/hls/main/index.m3u8",
                    "metadataWs": "/ws/metadata",
                    "lowLatency": True,  # MIXER_HLS_LOW_LATENCY's default: hls.js LL tuning
                }
            async with session.get(f"{base}/vendor/hls.min.js") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")

            async with session.get(f"{base}/healthz") as r:
                health = await r.json()
            assert r.status == 200 and health["status"] == "ok" and health["ready"] is True
            assert health["outputs"][0]["label"] == "hls:main"
            assert health["outputs"][0]["state"] == "running"
            assert tick == 100
    finally:
        await http.stop()
        await pipeline.close()


@pytest.mark.parametrize(
    "raw_path",
    [
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/vendor/..%2f..%2fsecret.txt",
        "/vendor/%2e%2e/%2e%2e/secret.txt",
        "/../secret.txt",
        "/..%5csecret.txt",
        "/hls/..%2f..%2fsecret.txt/index.m3u8",
        "/hls/main/..%2f..%2fsecret.txt",
        "/hls/%2e%2e/secret.txt",
        "/hls/..%2f/index.m3u8",
        "/%2fetc%2fpasswd",
        "//etc/passwd",
        "/hls/main/%2fetc%2fpasswd",
        "/.hidden",
    ],
)
async def test_no_path_reaches_outside_the_served_dirs(
    dirs: tuple[Path, Path], raw_path: str
) -> None:
    hls_dir, player = dirs
    (player / ".hidden").write_text("top secret")
    http = HttpEndpoint(Settings(http_port=0), hls_dir, player, None)
    await http.start()
    try:
        assert http.port is not None
        assert await raw_status(http.port, raw_path) in (400, 403, 404)
        # and a legitimate file still works on the same server
        assert await raw_status(http.port, "/vendor/hls.min.js") == 200
    finally:
        await http.stop()


async def test_bound_to_loopback_by_default(dirs: tuple[Path, Path]) -> None:
    hls_dir, player = dirs
    http = HttpEndpoint(Settings(http_port=0), hls_dir, player, None)
    await http.start()
    try:
        assert http._runner is not None
        assert all(addr[0] == "127.0.0.1" for addr in http._runner.addresses)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{http.port}/config.json") as r:
                assert json.loads(await r.text())["src"] is None
            async with session.get(f"http://127.0.0.1:{http.port}/healthz") as r:
                assert (await r.json())["status"] == "ok"
    finally:
        await http.stop()


async def test_stop_closes_open_websockets_promptly(dirs: tuple[Path, Path]) -> None:
    hls_dir, player = dirs
    http = HttpEndpoint(Settings(http_port=0), hls_dir, player, None)
    await http.start()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{http.port}/ws/metadata")
        await asyncio.sleep(0.1)
        await asyncio.wait_for(http.stop(), 10)  # never waits out aiohttp's 60 s default
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()


async def test_metadata_clients_are_capped_with_a_clear_refusal(dirs: tuple[Path, Path]) -> None:
    hls_dir, player = dirs
    http = HttpEndpoint(Settings(http_port=0, http_max_metadata_clients=2), hls_dir, player, None)
    await http.start()
    url = f"http://127.0.0.1:{http.port}/ws/metadata"
    try:
        async with aiohttp.ClientSession() as session:
            first = await session.ws_connect(url)
            second = await session.ws_connect(url)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
            assert refused.value.status == 503
            async with session.get(url) as r:  # what the refusal says, read as plain HTTP
                assert r.status == 503
                assert "MIXER_HTTP_MAX_METADATA_CLIENTS" in (await r.json())["error"]
            # the connected ones still get payloads; a slot freed is taken again
            http.publish(payload_for(7))
            for ws in (first, second):
                assert MetadataPayload.from_json((await ws.receive(timeout=5)).data).seq == 7
            await first.close()
            for _ in range(100):
                if len(http._clients) < 2:
                    break
                await asyncio.sleep(0.02)
            third = await session.ws_connect(url)
            for ws in (second, third):
                await ws.close()
    finally:
        await http.stop()


async def test_the_tick_only_hands_payloads_over(dirs: tuple[Path, Path]) -> None:
    hls_dir, player = dirs
    http = HttpEndpoint(Settings(http_port=0), hls_dir, player, None)
    await http.start()
    try:
        async with aiohttp.ClientSession() as session:
            clients = [
                await session.ws_connect(f"http://127.0.0.1:{http.port}/ws/metadata")
                for _ in range(3)
            ]
            await asyncio.sleep(0.1)  # registered
            for seq in range(5):  # one tick's worth of calls, no await between them
                http.publish(payload_for(seq))
            # nothing was encoded or queued to a client inside the tick ...
            assert all(q.empty() for q in http._clients)
            # ... the publisher task does it, in order, for every client
            for ws in clients:
                got = [
                    MetadataPayload.from_json((await ws.receive(timeout=5)).data).seq
                    for _ in range(5)
                ]
                assert got == [0, 1, 2, 3, 4]
                await ws.close()
    finally:
        await http.stop()
