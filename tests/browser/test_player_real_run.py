"""The demo player against a real run: room server, talkers, worker, HTTP endpoint.

Headless Chromium opens the worker's own page (``/``, which plays the
worker's first HLS output), plays the live mix, shows a meter per talker
with the muted one muted, and reaches the ended state when the worker ends
the stream at its maximum duration (ENDLIST).  The screenshot it saves is
the one the docs show (``docs/player.png``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.support.env import ROOT, free_port, require_path
from tests.support.llhls_util import check_blocking_reload, decoded_samples
from tests.support.player_util import (
    check_ended_at_the_streams_end,
    check_played_live_stream,
    drive_player,
)
from tests.support.process_util import Proc, processes, wait_for_port

pytestmark = pytest.mark.slow

SECRET = "player-real-run-secret-0123456789abcdef"
MAX_DURATION = 24


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def test_player_plays_a_real_worker_run(tmp_path: Path, artifacts_dir: Path) -> None:
    require_path(ROOT / "player_demo" / "vendor" / "hls.min.mjs", "no hls.js: run `make setup`")
    room_port, http_port = free_port(), free_port()
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    context = {
        "room": {"name": "RM-player"},
        "outputs": ["hls:live"],
        "maxParticipantDuration": MAX_DURATION,
    }
    screenshot = artifacts_dir / "player-real-run.png"
    screenshot.unlink(missing_ok=True)
    with processes() as procs:
        procs.append(Proc(["room-server", "--port", str(room_port)], env, tmp_path / "server.log"))
        wait_for_port(room_port)
        for name, tone, extra in (
            ("alice", 440, []),
            ("bob", 660, []),
            ("carol", 880, ["--mute-at", "0.5"]),
        ):
            procs.append(
                Proc(
                    [
                        "talker",
                        "--room",
                        "RM-player",
                        "--identity",
                        name,
                        "--tone",
                        str(tone),
                        "--duration",
                        "60",
                        *extra,
                    ],
                    env,
                    tmp_path / f"{name}.log",
                )
            )
        worker = Proc(
            ["run", "--context", json.dumps(context)],
            {**env, "MIXER_HLS_DIR": str(tmp_path / "hls"), "MIXER_HTTP_PORT": str(http_port)},
            tmp_path / "worker.log",
        )
        procs.append(worker)
        end = time.monotonic() + 60
        while not await asyncio.to_thread(_ready, f"http://127.0.0.1:{http_port}/readyz"):
            assert time.monotonic() < end, worker.log()[-2000:]
            assert worker.popen.poll() is None, worker.log()[-2000:]
            await asyncio.sleep(0.3)
        # LL-HLS (the default) from the real worker's endpoint: valid tags, blocking
        # reload, and whole segments for a plain HLS client.
        base = f"http://127.0.0.1:{http_port}/hls/live/"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "index.m3u8") as r:
                text = await r.text()
            assert "#EXT-X-PART-INF:PART-TARGET=0.2" in text, text
            assert "CAN-BLOCK-RELOAD=YES" in text and "#EXT-X-PRELOAD-HINT" in text, text
            await check_blocking_reload(session, base)
            for name in re.findall(r"^(seg-\d{6}\.ts)$", text, re.M)[-2:]:
                async with session.get(base + name) as r:
                    assert decoded_samples(await r.read()) >= 1.8 * 48000
        report = await drive_player(
            f"http://127.0.0.1:{http_port}/",
            identities=["alice", "bob", "carol"],
            screenshot=screenshot,
            autoplay=False,
            budget_s=MAX_DURATION + 40,
        )
        rc = await asyncio.to_thread(worker.wait, 60)
    (artifacts_dir / "player-real-run-report.json").write_text(json.dumps(report.raw, indent=1))
    assert rc == 0, worker.log()[-2000:]
    check_played_live_stream(
        report, identities={"alice": False, "bob": False, "carol": True}, min_played_s=6.0
    )
    assert any(s["endlist"] for s in report.samples), report.summary()
    # it reached Ended (check_played_live_stream) at the stream's end, with its last part
    check_ended_at_the_streams_end(report)
    # every payload shown carries a level for the talkers that are heard
    loud = [p for p in report.shown if p["levels"].get("alice", 0) > 1000]
    assert len(loud) >= 8, report.summary()
    assert all(p["levels"].get("carol") == -1 for p in report.shown[2:]), report.shown
    assert screenshot.stat().st_size > 10_000
    # hls.js in low-latency mode (the page's tuning): the page's latency readout, once
    # settled, stays under liveMaxLatencyDuration (1.6 s) plus 0.4 s for the loaded machine
    live = [s for s in report.samples if s["state"] == "live" and s["latency"] is not None]
    assert len(live) >= 10, report.summary()
    worst = max(s["latency"] for s in live[2:])
    assert worst < 2.0, f"live latency up to {worst:.2f} s: {report.summary()}"
    shutil.copy(screenshot, artifacts_dir / "player.png")
