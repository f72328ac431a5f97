"""The product as a user runs it: real room server, real talkers, ``mixer-ext run``.

One run of about 15 s with an HLS and a recording output checks the whole
contract of the extension: it exits 0 by itself at the maximum participant
duration, the HLS holds every talker's tone, the payloads follow the room
(mute, leave), the bot joined once, the playlist is finished, and the status
callback saw ``started`` then ``ended``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from mixer_ext.testing.spectrum import tone_levels
from tests.support.env import free_port
from tests.support.hls_reader import read_hls, read_ts, runs_where
from tests.support.process_util import Proc, processes, start_room_server

SECRET = "e2e-secret-not-for-production-0123456789"
TONES = {"alice": 440.0, "bob": 660.0, "carol": 990.0}
MAX_DURATION = 15


async def _callback_server(received: list[dict[str, Any]]) -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def _value(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def _scrape_when(port: int, lines: list[str], within: float) -> str:
    """GET /metrics until it holds every one of ``lines``; returns that scrape."""
    deadline = time.monotonic() + within
    text = ""
    while time.monotonic() < deadline:
        try:
            text = await asyncio.to_thread(_get_text, f"http://127.0.0.1:{port}/metrics")
        except OSError:
            text = ""
        if set(lines) <= set(text.splitlines()):
            return text
        await asyncio.sleep(0.5)
    raise AssertionError(f"{lines} never all appeared in /metrics:\n{text[-2000:]}")


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return str(resp.read().decode())


async def test_run_until_max_duration(tmp_path: Path) -> None:

    received: list[dict[str, Any]] = []
    runner, cb_port = await _callback_server(received)
    room_port = free_port()
    env = {
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}",
        "MIXER_LOG_FORMAT": "json",
    }
    hls_dir = tmp_path / "hls"
    recording = tmp_path / "rec.ts"
    context = {
        "room": {"name": "RM-e2e"},
        "outputs": ["hls:e2e", f"file:{recording}"],
        "audioBitrate": 96,
        "maxParticipantDuration": MAX_DURATION,
    }
    try:
        with processes() as procs:
            start_room_server(procs, room_port, env, tmp_path / "server.log")
            talker_args = {
                "alice": ["--duration", "40"],
                "bob": ["--duration", "40", "--mute-at", "6", "--unmute-at", "10"],
                "carol": ["--leave-at", "9"],
            }
            for name, extra in talker_args.items():
                procs.append(
                    Proc(
                        [
                            "talker",
                            "--room",
                            "RM-e2e",
                            "--identity",
                            name,
                            "--tone",
                            str(TONES[name]),
                            *extra,
                        ],
                        env,
                        tmp_path / f"talker-{name}.log",
                    )
                )
            worker_env = {
                **env,
                "MIXER_HLS_DIR": str(hls_dir),
                # an event playlist keeps every segment, so the whole run can be checked
                "MIXER_HLS_PLAYLIST_TYPE": "event",
                "MIXER_STATUS_CALLBACK_URL": f"http://127.0.0.1:{cb_port}/status",
            }
            metrics_port = free_port()
            worker_env["MIXER_METRICS_PORT"] = str(metrics_port)
            t0 = time.monotonic()
            worker = Proc(["run", "--context", json.dumps(context)], worker_env, tmp_path / "w.log")
            procs.append(worker)
            await _scrape_when(
                metrics_port, ["mixer_participants 3.0", "mixer_inputs 3.0"], within=40
            )
            await asyncio.sleep(4)  # a few seconds of mixing with everyone in
            metrics = await _scrape_when(metrics_port, ["mixer_inputs 3.0"], within=5)
            rc = await asyncio.to_thread(worker.wait, 90)
            elapsed = time.monotonic() - t0
            wlog = worker.log()
            assert rc == 0, wlog[-3000:]
            # startup (imports, join) plus 15 s in the room plus shutdown
            assert MAX_DURATION <= elapsed < MAX_DURATION + 25, elapsed
            await asyncio.sleep(2.0)  # would a misbehaving worker come back? it has exited
    finally:
        await runner.cleanup()

    events = [json.loads(ln) for ln in wlog.splitlines() if ln.startswith("{")]
    joins = [e for e in events if e.get("event") == "joined"]
    assert len(joins) == 1, "the bot must join once and never again"
    assert SECRET not in wlog

    # --- Prometheus, mid-run: the figures an operator graphs, with bounded labels
    assert 'mixer_run_state{mixer_run_state="started"} 1.0' in metrics
    assert "mixer_room_joins_total 1.0" in metrics
    assert _value(metrics, "mixer_payloads_total") >= 8
    assert _value(metrics, "mixer_tick_lateness_seconds_count") > 200
    assert _value(metrics, 'mixer_output_bytes_total{kind="hls"}') > 0
    assert _value(metrics, 'mixer_output_bytes_total{kind="file"}') > 0
    assert _value(metrics, "mixer_encode_seconds_count") > 200
    assert "mixer_input_buffered_latency_seconds_bucket" in metrics
    for name in TONES:  # identities are never label values
        assert name not in metrics

    # --- the status callback
    states = [(r["state"], r.get("reason")) for r in received]
    assert ("started", None) in states
    assert states[-1] == ("ended", "max-participant-duration"), states
    assert states.index(("started", None)) < len(states) - 1

    # --- the HLS a player receives
    hls = read_hls(hls_dir / "e2e")
    assert hls.ended, hls.playlist
    assert hls.codec == "aac"
    levels = tone_levels(hls.audio, hls.sample_rate, [*list(TONES.values()), 550.0])
    noise = levels.pop(550.0)
    for f, a in levels.items():
        assert a > 0.02 and a > 20 * noise, (f, levels, noise)

    seqs = [p.seq for _, p in hls.payloads]
    assert len(seqs) >= 2 * (MAX_DURATION - 3)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "s must rise by exactly 1"
    times = [t for t, _ in hls.payloads]
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert all(abs(s - 0.5) <= 0.021 for s in steps), steps
    assert all("audio-mixer-v1" not in p.levels for _, p in hls.payloads)
    for name in TONES:
        assert any(name in p.levels for _, p in hls.payloads), name

    # alice: always talking once she is in
    alice = [p.levels["alice"] for _, p in hls.payloads if "alice" in p.levels]
    assert alice and all(v > 1000 for v in alice[2:]), alice
    # bob: muted for 4 s (8 payloads), then talking again
    bob = [p.levels.get("bob", -2) for _, p in hls.payloads]
    # (before his track is subscribed, bob is in the room with no audio: -1 too)
    talking = next(i for i, v in enumerate(bob) if v > 1000)
    bob = bob[talking:]
    muted = runs_where(bob, lambda v: v == -1)
    assert len(muted) == 1, bob
    start, length = muted[0]
    assert 6 <= length <= 10, bob
    assert bob[start - 1] > 1000 and bob[start + length + 1] > 1000, bob
    # carol: present, then gone for good
    carol_in = [("carol" in p.levels) for _, p in hls.payloads]
    first_out = carol_in.index(False, carol_in.index(True))
    assert not any(carol_in[first_out:]), carol_in

    # --- the recording has the same stream, finalized
    rec = read_ts(recording.read_bytes())
    assert rec.duration > MAX_DURATION - 3
    assert len(rec.payloads) >= len(hls.payloads) - 4
