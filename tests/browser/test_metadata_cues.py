"""A strict player at 0.6-0.8 s live latency gets every payload before its time (issue 26).

The real ``Mixer`` on the real ``MixerClock`` feeds ``OutputPipeline`` -> ``HlsOutput``
(LL-HLS) -> ``HttpEndpoint``; headless Chromium plays it with hls.js (lowLatencyMode,
``liveSyncDuration`` 0.55 s, ``liveMaxLatencyDuration`` 0.85 s: hls.js only speeds up
with more than 1 s buffered, so after a stall it seeks back to its target), which
exposes each ID3 tag as a cue on its own ``metadata`` TextTrack.  The page
(tests/browser/pages/metadata_cues.html) only fires cues it had before their time: one
hls.js adds once the playhead is at or past its start never becomes active.  What a
user of such a player checks: at 0.6-0.8 s behind live, at least 99 % of the payloads
of the audio played were active cues (``cuechange``).  With payloads stamped at their
window's start (before issue 26) a tag reached hls.js about as the playhead reached
it, and a share came too late (seen: 2 of 24 and 1 of 20 missed in two runs; with
end-of-window stamps 0 missed in 5 runs, tags 0.2-0.9 s ahead of their time).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.clock import MixerClock
from mixer_ext.core.frames import SAMPLE_RATE
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.serve.http import HttpEndpoint
from mixer_ext.settings import Settings
from tests.support.browser import page_script
from tests.support.env import ROOT, require_path

pytestmark = pytest.mark.slow

PAGE = ROOT / "tests" / "browser" / "pages" / "metadata_cues.html"
HLS_JS = ROOT / "player_demo" / "vendor" / "hls.min.js"
#: seconds of playback watched; the first SETTLE_S are start-up (join, catch-up)
PLAY_S = 20.0
SETTLE_S = 4.0
#: the live latency (s) the payloads are counted at: what the issue asks, with a margin
#: of half an AAC frame or so for the readout's own jitter
LATENCY_BAND = (0.58, 0.82)
#: an LL-HLS part of the product (9 AAC frames)
PART_S = 9 * 1024 / SAMPLE_RATE


async def play(url: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *page_script("metadata_cues.mjs"),
        json.dumps({"url": url, "playMs": int(PLAY_S * 1000)}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), PLAY_S + 40)
    assert proc.returncode == 0, err.decode()[-800:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_hlsjs_at_sub_second_latency_gets_every_payload_before_its_time(
    tmp_path: Path,
) -> None:
    require_path(HLS_JS, "no hls.js: run `make setup`")
    page_dir = tmp_path / "page"
    (page_dir / "vendor").mkdir(parents=True)
    shutil.copy(PAGE, page_dir / "index.html")
    shutil.copy(HLS_JS, page_dir / "vendor" / "hls.min.js")
    settings = Settings(hls_dir=tmp_path / "hls", http_host="127.0.0.1", http_port=0)
    pipeline = OutputPipeline([parse_output("hls:main")], 128, settings)
    await pipeline.start()
    endpoint = HttpEndpoint(settings, tmp_path / "hls", page_dir, "main", pipeline)
    await endpoint.start()
    mixer = Mixer(exclude_identity="audio-mixer-v1")
    mixer.add_participant("alice")  # in the room, no track: v = -1 in every payload
    sent: dict[int, int] = {}  # s -> pts (48 kHz) of every payload of the mixer

    def note(payload: MetadataPayload) -> None:
        sent[payload.seq] = payload.pts

    pipeline.add_payload_listener(note)
    clock = MixerClock(mixer, pipeline)
    clock.start()
    try:
        await asyncio.sleep(2.5)  # a live stream with a segment or so written
        got = await play(f"http://127.0.0.1:{endpoint.port}/?src=/hls/main/index.m3u8")
    finally:
        await clock.stop()
        await pipeline.close()
        await endpoint.stop()
    report = got.get("report") or {}
    why = json.dumps({k: got.get(k) for k in ("problem", "pageErrors")}) + json.dumps(report)[:3000]
    assert not got.get("problem") and not got["pageErrors"], why
    assert report["playingAt"] is not None, why

    # held at 0.6-0.8 s behind live once settled (hls.js's own latency readout), most of
    # the time: a stall on this loaded 2-core machine pushes it up until hls.js catches up
    settled = [s for s in got["samples"] if s["t"] > SETTLE_S and s["latency"] is not None]
    assert len(settled) > 40, why
    latency = statistics.median(s["latency"] for s in settled)
    in_band = [s for s in settled if LATENCY_BAND[0] <= s["latency"] <= LATENCY_BAND[1]]
    assert len(in_band) >= 0.5 * len(settled), f"median live latency {latency:.2f} s: {settled}"

    def latency_at(t: float) -> float:
        """hls.js's latency when the playhead was nearest media time ``t``."""
        return float(min(settled, key=lambda s: abs(s["ct"] - t))["latency"])

    # every payload of the audio played after settling was an active cue at least once,
    # counted where hls.js held 0.6-0.8 s: the stream's own payloads, placed on the media
    # timeline by the cues that arrived; one in audio hls.js skipped by seeking to its
    # live target is not due
    added = {a["s"]: a for a in report["added"]}
    assert added, why
    some = next(iter(added.values()))
    offset = some["start"] - sent[some["s"]] / SAMPLE_RATE
    start_ct, end_ct = settled[0]["ct"], settled[-1]["ct"] - 0.1
    # a seek skips the audio up to its target, and the part before the one it lands in:
    # a tag stamped within one part after the target may ride in that skipped part
    # (carried no later than its audio, so possibly one part earlier)
    skipped = [(k["from"], k["to"] + PART_S) for k in report["seeks"] if k["to"] > k["from"]]
    due = [
        s
        for s, pts in sent.items()
        if start_ct <= (t := offset + pts / SAMPLE_RATE) <= end_ct
        and not any(a < t <= b for a, b in skipped)
        and LATENCY_BAND[0] <= latency_at(t) <= LATENCY_BAND[1]
    ]
    assert len(due) >= 15, (due, start_ct, end_ct, why)
    active = {a["s"] for a in report["active"]}
    missed = [added.get(s, {"s": s, "added": "never"}) for s in due if s not in active]
    early = [added[s]["start"] - added[s]["ct"] for s in due if s in added]
    summary = (
        f"{len(missed)} of {len(due)} payloads never active (seen after their time or never: "
        f"{missed}); median latency {latency:.2f} s; seen ahead of their time by "
        f"{min(early):.3f}..{max(early):.3f} s; seeks {report['seeks']}"
    )
    print(summary)
    assert len(missed) <= 0.01 * len(due), summary
