"""Issue 16.7 in a browser: hls.js plays a live stream across a worker's SIGKILL and restart.

A real ``mixer-ext run`` (room server, one talker, LL-HLS served by the worker's own
HTTP endpoint) is being played by the product's player page (its hls.js and its
low-latency tuning) in headless Chromium when it is killed with SIGKILL and started
again on the same directory and port.  The page comes from a server of its own, as a
site embedding the player would serve it, so it outlives the worker.  The listener
sees a stall while the worker is down (its origin is gone too), then hls.js goes on
playing the continued playlist through the ``#EXT-X-DISCONTINUITY`` to
``#EXT-X-ENDLIST``, with no fatal error.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mixer_ext.hls.playlist import parse_media_playlist
from tests.support.browser import page_script
from tests.support.env import free_port, require_path, require_program
from tests.support.process_util import Proc, processes, start_room_server, start_talker

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PLAYER_DIR = ROOT / "player_demo"
HLS_JS = PLAYER_DIR / "vendor" / "hls.min.mjs"  # the page imports it (live-player.js)
SECRET = "restart-browser-secret-not-for-production-0123"
MAX_DURATION = 22


async def _page_server() -> tuple[web.AppRunner, str]:
    """The player directory over HTTP (``/`` is its page), apart from the worker."""

    async def index(_r: web.Request) -> web.FileResponse:
        return web.FileResponse(PLAYER_DIR / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/", PLAYER_DIR)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_hlsjs_plays_across_a_sigkill_and_restart(tmp_path: Path) -> None:
    require_program("node")
    require_path(HLS_JS, "player_demo/vendor/hls.min.mjs is missing (make setup)")
    page_runner, page_base = await _page_server()
    room_port, http_port = free_port(), free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    hls = tmp_path / "hls"
    playlist = hls / "ev" / "index.m3u8"
    context = json.dumps(
        {
            "room": {"name": "RM-restart-browser"},
            "outputs": ["hls:ev"],
            "audioBitrate": 64,
            "maxParticipantDuration": MAX_DURATION,
        }
    )
    worker_env = {
        **env,
        "MIXER_HLS_DIR": str(hls),
        "MIXER_HLS_SEGMENT_DURATION": "1",
        "MIXER_HTTP_PORT": str(http_port),
        "MIXER_HTTP_CORS_ORIGIN": "*",
        "MIXER_HTTP_LINGER": "8",
    }
    try:
        with processes() as procs:
            start_room_server(procs, room_port, env, tmp_path / "server.log")
            start_talker(
                procs, env, tmp_path / "talker.log", "RM-restart-browser", "alice", 440, 90
            )
            first = Proc(["run", "--context", context], worker_env, tmp_path / "w1.log")
            procs.append(first)
            deadline = time.monotonic() + 40
            while not (
                playlist.exists() and len(parse_media_playlist(playlist.read_text()).segments) >= 3
            ):
                assert time.monotonic() < deadline, first.log()[-2000:]
                await asyncio.sleep(0.2)
            src = f"http://127.0.0.1:{http_port}/hls/ev/index.m3u8"
            spec = {
                "url": f"{page_base}/?engine=hlsjs&lowLatency=1&src={src}",
                "playMs": 45_000,
                "untilEnded": True,
            }
            player = await asyncio.create_subprocess_exec(
                *page_script("llhls_check.mjs"),
                json.dumps(spec),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
            )
            await asyncio.sleep(6)  # the listener is playing
            first.popen.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
            second = Proc(["run", "--context", context], worker_env, tmp_path / "w2.log")
            procs.append(second)
            out, err = await asyncio.wait_for(player.communicate(), 90)
            assert player.returncode == 0, err.decode()[-800:]
            rc = await asyncio.to_thread(second.wait, 30)
            assert rc == 0, second.log()[-2000:]
    finally:
        await page_runner.cleanup()

    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert not report.get("problem") and not report["pageErrors"], report
    final = report["final"]
    assert final["engine"] == "hlsjs" and final["playing"], final
    fatal = [e for e in final["errors"] if e.endswith("/true")]
    assert not fatal, final["errors"]
    assert final["ended"], f"hls.js never reached ENDLIST: {report['samples'][-3:]}"
    text = playlist.read_text()
    ended = parse_media_playlist(text)
    # one discontinuity: still listed, or slid out of the live window and counted
    assert sum(s.discontinuity for s in ended.segments) + ended.discontinuity_sequence == 1, text
    # what it played: up to the end, and well past the moment of the kill
    samples = report["samples"]
    # the kill came 6 s after the driver started (a browser launch or so before its clock):
    # at t = 4 s it was still the first process's stream, with about a second buffered
    before_kill = max(s["ct"] for s in samples if s["t"] <= 4.0)
    assert samples[-1]["ct"] - before_kill > 5.0, (before_kill, samples[-1])
