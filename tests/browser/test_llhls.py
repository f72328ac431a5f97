"""The player page (its hls.js and its LL-HLS tuning) plays an LL-HLS stream of TS parts.

The stream is written live by ``PartedStreamWriter`` from AAC encoded in real time and
served by the worker's own ``HttpEndpoint`` (``HlsOrigin``, blocking reload), which also
serves the player page; headless Chromium opens that page, so the hls.js configuration
under test is the product's (``player_demo/hls-config.js``).  The room and the mixer are
not in this test (``test_player_real_run`` plays a whole worker run through the page).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.hls.origin import HlsOrigin
from mixer_ext.serve.http import HttpEndpoint
from mixer_ext.settings import Settings
from tests.support.browser import page_script
from tests.support.env import require_path, require_program
from tests.support.llhls_util import LiveTone

ROOT = Path(__file__).resolve().parents[2]
PLAYER_DIR = ROOT / "player_demo"
HLS_JS = PLAYER_DIR / "vendor" / "hls.min.mjs"  # the page imports it (live-player.js)
RATE = 48000
#: what issue 14 asks: 30 s of LL-HLS playback without a stall
PLAY_S = 30.0
#: seconds after playback starts in which a start-up stall is tolerated (see below)
STARTUP_S = 3.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[HlsOrigin, str]]:
    """The worker's HTTP endpoint over ``tmp_path`` (its HLS) and the player directory."""
    require_program("node")
    require_path(HLS_JS, "player_demo/vendor/hls.min.mjs is missing (make setup)")
    settings = Settings(hls_dir=tmp_path, http_host="127.0.0.1", http_port=0)
    endpoint = HttpEndpoint(settings, tmp_path, PLAYER_DIR, None)
    await endpoint.start()
    try:
        yield endpoint.origin, f"http://127.0.0.1:{endpoint.port}"
    finally:
        await endpoint.stop()


async def play(
    base: str,
    name: str,
    *,
    low_latency: bool,
    play_s: float,
    until_ended: bool,
    latency_ms: int = 0,
    query: str = "",
) -> Any:
    page = f"{base}/?engine=hlsjs&lowLatency={int(low_latency)}&src=/hls/{name}/index.m3u8{query}"
    spec = {
        "url": page,
        "playMs": int(play_s * 1000),
        "untilEnded": until_ended,
        "latencyMs": latency_ms,
    }
    proc = await asyncio.create_subprocess_exec(
        *page_script("llhls_check.mjs"),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), play_s + 40)
    assert proc.returncode == 0, err.decode()[-800:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_hlsjs_low_latency_plays_ts_parts_without_stalls(
    tmp_path: Path, server: tuple[HlsOrigin, str]
) -> None:
    origin, base = server
    live = LiveTone(tmp_path / "ll", origin, "ll")
    live.thread.start()
    try:
        await asyncio.sleep(1.5)
        report = await play(base, "ll", low_latency=True, play_s=PLAY_S, until_ended=False)
    finally:
        live.stop.set()
        await asyncio.to_thread(live.thread.join, 5)
    assert not report.get("problem") and not report["pageErrors"], report
    final = report["final"]
    assert final["engine"] == "hlsjs" and final["playing"], final
    assert final["parts"] > 20, final  # parts, not whole segments, were loaded
    # No stall once started.  Right after it starts, hls.js 1.7.4 sometimes stops loading
    # parts for about a second though they are listed (seen in 5 of 62 joins on this
    # loaded 2-core machine, never later in a run; docs/reference/player.md), stalls, and seeks
    # back to its target: that start-up hiccup is bounded here, not hidden.
    started = final["playingAt"]
    late = [s for s in final["stallAt"] if s["t"] - started > STARTUP_S]
    assert not late, (late, final["log"])
    assert final["stalls"] <= 2, (final["stallAt"], final["log"])
    settled = [s for s in report["samples"] if s["t"] > 4 and s["latency"]]
    assert len(settled) > 40
    worst = max(s["latency"] for s in settled)
    assert worst < 1.5, f"live latency up to {worst:.2f} s"
    times = [s["ct"] for s in settled]
    assert times[-1] - times[0] > 0.9 * (settled[-1]["t"] - settled[0]["t"])  # it kept playing


#: what docs/howto/far-listeners.md tells a deployment whose listeners are ~300 ms away
FAR = {"MIXER_HLS_PART_TARGET": "0.5", "MIXER_HLS_PART_HOLD_BACK": "1.5"}
#: the round trip Chromium adds to every request of the page (DevTools network emulation)
FAR_RTT_MS = 300


async def test_far_listener_setting_plays_through_300ms_of_latency(
    tmp_path: Path, server: tuple[HlsOrigin, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener 300 ms away: with the default 0.192 s parts hls.js (one part per round
    trip, hinted parts not requested) falls behind and stalls every few seconds (5 stalls
    in 25 s when this test was written); with the far setting it plays on, about the
    hold-back behind live."""
    for key, value in FAR.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    origin, base = server
    live = LiveTone(
        tmp_path / "far",
        origin,
        "far",
        part_target=settings.hls_part_target,
        part_hold_back=settings.hls_part_hold_back,
    )
    live.thread.start()
    try:
        await asyncio.sleep(2.5)
        report = await play(
            base, "far", low_latency=True, play_s=20, until_ended=False, latency_ms=FAR_RTT_MS
        )
    finally:
        live.stop.set()
        await asyncio.to_thread(live.thread.join, 5)
    assert not report.get("problem") and not report["pageErrors"], report
    final = report["final"]
    assert final["engine"] == "hlsjs" and final["playing"], final
    assert final["parts"] > 15, final  # still LL-HLS: parts, not whole segments
    started = final["playingAt"]
    late = [s for s in final["stallAt"] if s["t"] - started > STARTUP_S]
    assert not late, (late, final["log"])
    settled = sorted(s["latency"] for s in report["samples"] if s["t"] > 6 and s["latency"])
    assert len(settled) > 30
    assert settled[len(settled) // 2] < 2.2, f"{settled[len(settled) // 2]:.2f} s behind live"


async def test_hlsjs_without_low_latency_plays_to_endlist(
    tmp_path: Path, server: tuple[HlsOrigin, str]
) -> None:
    origin, base = server
    live = LiveTone(tmp_path / "plain", origin, "plain")
    live.thread.start()
    await asyncio.sleep(3.5)
    task = asyncio.create_task(play(base, "plain", low_latency=False, play_s=25, until_ended=True))
    await asyncio.sleep(8)
    live.stop.set()
    await asyncio.to_thread(live.thread.join, 5)
    report = await task
    final = report["final"]
    assert final["engine"] == "hlsjs" and final["playing"], report
    assert final["parts"] == 0 and final["frags"] > 3, final
    assert final["ended"], "ENDLIST did not end playback"
