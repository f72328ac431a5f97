"""Issue 16.11: shutdown fits its budget.

``MIXER_SHUTDOWN_BUDGET`` is shared out among the stages (``worker/budget.py``).
A real ``mixer-ext run`` with every output kind (LL-HLS, ``.m4a``, ``.ts``, and an
RTMP server that is not there) and a status callback that never answers gets
SIGTERM: it exits 0 within the budget, with the HLS playlist ended and both
recordings playable; the HTTP linger (set far longer than the budget) is skipped
after a signal.  At a natural end the linger is kept (scripted connector, the
rest real, as in tests/worker/test_lifecycle.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web

from mixer_ext.context import ExtensionContext
from mixer_ext.hls.playlist import parse_media_playlist
from mixer_ext.settings import Settings
from mixer_ext.worker import runner as worker_mod
from mixer_ext.worker.budget import SHARES, ShutdownBudget
from tests.support.env import free_port
from tests.support.process_util import Proc, processes, start_room_server
from tests.support.worker import ScriptedConnector

SECRET = "shutdown-secret-not-for-production-0123456789"
BUDGET = 8.0
#: the budget ends at the last stage; the interpreter's exit after it (threads, a loaded
#: machine) is not in it: allow a little for that
SLACK = 2.0


def test_the_shares_add_up_to_the_budget() -> None:
    assert sum(SHARES.values()) == pytest.approx(1.0)
    b = ShutdownBudget(20.0)
    stages = (b.cancel, b.clock, b.outputs, b.room, b.status, b.http)
    assert sum(stages) == pytest.approx(20.0)


def _decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(audio=0)) / 48_000


async def test_sigterm_finalizes_every_output_within_the_budget(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def hanging_hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        await asyncio.sleep(120)  # a callback receiver that never answers
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", hanging_hook)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    cb_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", cb_port).start()
    room_port = free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    hls = tmp_path / "hls"
    context = {
        "room": {"name": "RM-stop"},
        "outputs": [
            "hls:a",
            f"file:{tmp_path / 'rec.m4a'}",
            f"file:{tmp_path / 'rec.ts'}",
            f"rtmp://127.0.0.1:{free_port()}/live/nobody-listens",
        ],
        "audioBitrate": 64,
    }
    worker_env = {
        **env,
        "MIXER_HLS_DIR": str(hls),
        "MIXER_HLS_SEGMENT_DURATION": "1",
        "MIXER_HTTP_PORT": str(free_port()),
        "MIXER_HTTP_LINGER": "60",
        "MIXER_SHUTDOWN_BUDGET": str(BUDGET),
        "MIXER_STATUS_CALLBACK_URL": f"http://127.0.0.1:{cb_port}/status",
    }
    try:
        with processes() as procs:
            start_room_server(procs, room_port, env, tmp_path / "server.log")
            worker = Proc(["run", "--context", json.dumps(context)], worker_env, tmp_path / "w.log")
            procs.append(worker)
            playlist = hls / "a" / "index.m3u8"
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                if (
                    playlist.exists()
                    and len(parse_media_playlist(playlist.read_text()).segments) >= 3
                ):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("no HLS segments:\n" + worker.log()[-2000:])
            t0 = time.monotonic()
            worker.popen.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(worker.wait, BUDGET + 30)
            took = time.monotonic() - t0
            log = worker.log()
    finally:
        await runner.cleanup()
    assert rc == 0, log[-3000:]
    assert took <= BUDGET + SLACK, f"{took:.1f} s from SIGTERM to exit (budget {BUDGET} s)"
    assert parse_media_playlist(playlist.read_text()).ended
    assert _decoded_seconds(tmp_path / "rec.m4a") > 2.0
    assert _decoded_seconds(tmp_path / "rec.ts") > 2.0
    assert "nobody-listens" not in log


def _scripted(tmp_path: Path, linger: float) -> worker_mod.Worker:
    log: list[str] = []

    def factory(settings: Settings, room: str, identity: str) -> ScriptedConnector:
        return ScriptedConnector(("join", None, 3600), log)

    ctx = ExtensionContext.model_validate(
        {"room": {"name": "RM"}, "outputs": ["hls:t"], "maxParticipantDuration": 2}
    )
    settings = Settings(hls_dir=tmp_path, hls_segment_duration=1.0, http_port=0, http_linger=linger)
    return worker_mod.Worker(ctx, settings, connector_factory=factory)


async def test_a_natural_end_keeps_the_linger_a_stop_skips_it(tmp_path: Path) -> None:
    linger = 3.0
    natural = _scripted(tmp_path / "natural", linger)
    t0 = time.monotonic()
    assert await asyncio.wait_for(natural.run(), 30) == 0
    assert time.monotonic() - t0 >= 2.0 + linger  # the maximum duration, then the linger

    stopped = _scripted(tmp_path / "stopped", 60.0)
    task = asyncio.create_task(stopped.run())
    await asyncio.sleep(1.0)
    t1 = time.monotonic()
    stopped.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert time.monotonic() - t1 < 5.0
