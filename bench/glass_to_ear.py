"""Delivery latency in a real browser: LL-HLS vs plain HLS, clicks in, clicks heard out.

Method: a click source encodes silence with a 10 ms 2 kHz click at irregular
intervals (0.8-1.4 s, seeded) in real time into ``PartedStreamWriter`` (0.2 s
parts, 0.96 s segments) and stamps ``time.time()`` when a click frame is
handed to the AAC encoder.  ``HlsOrigin`` serves it on loopback with blocking
reload.  Headless Chromium plays it with the vendored hls.js (LL-HLS:
``lowLatencyMode`` with the player's config; plain: ``lowLatencyMode: false``,
so hls.js loads whole 0.96 s segments and holds back HOLD-BACK = 3 s), taps the
media element with Web Audio and stamps each onset at its estimated output time
(``getOutputTimestamp``).  Onsets are matched to clicks by the irregular
pattern.  Both modes run one after the other in one run.

What it cannot see: the mixer's own part (room -> AAC packet: bench/latency.py
measures it; add it for glass-to-ear through a room), the speaker's capture,
network RTT (loopback here), and the output device's real latency beyond what
Chromium reports.  Usage: python bench/glass_to_ear.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchlib import machine, percentile
from mixer_ext.llhls.origin import HlsOrigin
from mixer_ext.llhls.tspart import AudioPacket
from mixer_ext.llhls.writer import PartedStreamWriter

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "bench" / "llhls_browser.mjs"
HLS_JS = ROOT / "player_demo" / "vendor" / "hls.min.js"
PAGE = '<!doctype html><script src="/hls.min.js"></script><audio id="media"></audio>'
RATE = 48000
FRAME = 1024


class ClickSource:
    def __init__(self, directory: Path, origin: HlsOrigin, name: str, seed: int) -> None:
        self.enc: Any = av.CodecContext.create("aac", "w")
        self.enc.sample_rate, self.enc.layout, self.enc.format = RATE, "stereo", "fltp"
        self.enc.bit_rate, self.enc.time_base = 128000, Fraction(1, RATE)
        self.enc.open()
        directory.mkdir(parents=True, exist_ok=True)
        self.writer = PartedStreamWriter(
            directory,
            extradata=bytes(self.enc.extradata or b""),
            bit_rate=128000,
            on_change=lambda: origin.notify_threadsafe(name),
        )
        self.rng = random.Random(seed)
        self.sent: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"clicks-{name}", daemon=True)

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        next_click = round(1.0 * RATE / FRAME)
        click = (0.5 * np.sin(2 * math.pi * 2000 * np.arange(480) / RATE)).astype(np.float32)
        while not self.stop.is_set():
            x = np.zeros(FRAME, np.float32)
            if n == next_click:
                x[: len(click)] = click
                self.sent.append(time.time())
                next_click += round(self.rng.uniform(0.8, 1.4) * RATE / FRAME)
            frame = av.AudioFrame.from_ndarray(np.stack([x, x]), "fltp", "stereo")
            frame.sample_rate, frame.pts = RATE, n * FRAME
            for p in self.enc.encode(frame):
                self.writer.audio(AudioPacket(bytes(p), int(p.pts), int(p.duration or FRAME)))
            n += 1
            delay = start + n * FRAME / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.writer.close(end_of_stream=True)


def match(sent: list[float], heard_ms: list[float]) -> list[float]:
    """Latencies (s): each onset against the click the irregular pattern says it is."""
    heard = [h / 1000 for h in heard_ms]
    if not heard or not sent:
        return []
    # coarse latency: the shift that lines the first onsets up with clicks most tightly
    best: tuple[float, float] | None = None
    for k in range(len(sent)):
        lat = [h - s for h, s in zip(heard[:8], sent[k:], strict=False)]
        if len(lat) < min(4, len(heard)):
            break
        if min(lat) <= 0:
            continue  # an onset cannot come before its click
        spread = max(lat) - min(lat)
        if best is None or spread < best[0]:
            best = (spread, float(np.median(lat)))
    assert best is not None
    coarse = best[1]
    out = []
    for h in heard:
        s = min(sent, key=lambda s: abs(h - s - coarse))
        if abs(h - s - coarse) < 0.25:
            out.append(h - s)
    return out


async def run_mode(
    base: str, root: Path, origin: HlsOrigin, name: str, ll: bool, secs: float
) -> dict[str, Any]:
    src = ClickSource(root / name, origin, name, seed=14)
    src.thread.start()
    await asyncio.sleep(3.5)
    spec = {
        "url": base + "/",
        "src": f"{base}/hls/{name}/index.m3u8",
        "lowLatency": ll,
        "playMs": int(secs * 1000),
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
    )
    out, _ = await proc.communicate()
    src.stop.set()
    await asyncio.to_thread(src.thread.join, 5)
    report = json.loads(out.decode().strip().splitlines()[-1])
    lat = match(src.sent, report.get("onsets", []))
    return {"report": report, "latency": lat, "clicks": len(src.sent)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="g2e-"))
    origin = HlsOrigin(root)
    app = web.Application()
    origin.add_routes(app)

    async def page(_r: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def hls_js(_r: web.Request) -> web.FileResponse:
        return web.FileResponse(HLS_JS)

    app.router.add_get("/", page)
    app.router.add_get("/hls.min.js", hls_js)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(machine())
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    rows = []
    try:
        for label, ll in (("LL-HLS (0.2 s parts)", True), ("plain HLS (0.96 s segments)", False)):
            r = await run_mode(base, root, origin, "ll" if ll else "plain", ll, args.seconds)
            lat = r["latency"]
            rep = r["report"]
            if rep.get("problem") or not lat:
                print(f"{label}: no measurement ({rep.get('problem')})")
                continue
            hl = rep.get("latency") or [0]
            rows.append((label, lat))
            print(
                f"{label:30s} clicks heard {len(lat):3d}/{r['clicks']:3d}  "
                f"p50 {percentile(lat, 50):.3f} s  p99 {percentile(lat, 99):.3f} s  "
                f"max {max(lat):.3f} s  stalls {rep['stalls']}  hls.latency median "
                f"{float(np.median(hl)):.2f} s"
            )
        if len(rows) == 2:
            ratio = percentile(rows[1][1], 50) / percentile(rows[0][1], 50)
            print(f"plain / LL-HLS p50 ratio: {ratio:.2f}")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
