"""The player's meters follow the product's own stream in a real browser.

The stream is the worker's real HLS path (``OutputPipeline`` -> ``HlsOutput`` ->
``HttpEndpoint``, tests/support/product_stream.py), fed the mix of three known voices (alice's
and bob's tones change loudness every 500 ms window, carol is muted) the way the mixer
clock feeds it; headless Chromium opens the endpoint's own page (``/``, which plays
``/hls/main/index.m3u8`` from ``/config.json``).  What a person would check: it plays
live, names the three talkers with carol muted, every payload is shown once and in
order when the playhead reaches the audio it describes (not when its segment was
downloaded), with exactly the levels the stream carried, and it ends at ENDLIST.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mixer_ext.core.frames import PAYLOAD_SECONDS
from tests.support.env import ROOT, require_path
from tests.support.player_util import (
    THREE_TALKERS,
    check_ended_at_the_streams_end,
    check_meters_in_sync,
    check_played_live_stream,
    drive_player,
)
from tests.support.product_stream import ProductStream

pytestmark = pytest.mark.slow

#: 6 s already written when the page opens, then 11 s live (a Chromium that takes 4 s
#: to start on a loaded machine still sees 8 payloads and more)
PREROLL_S = 6.0
STREAM_S = 17.0
#: the HLS output's segment duration (ProductStream's default)
SEGMENT_S = 2.0
#: an LL-HLS part of the output: 9 AAC frames (MIXER_HLS_PART_TARGET 0.2)
PART_S = 9 * 1024 / 48000
#: a cue may sit one AAC frame (1024 samples, 21 ms) off its audio, not more
CUE_TOLERANCE_S = 0.05


async def test_player_meters_follow_the_products_stream(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    require_path(ROOT / "player_demo" / "vendor" / "hls.min.mjs", "no hls.js: run `make setup`")
    stream = ProductStream(tmp_path / "hls")
    await stream.start()
    feeding: asyncio.Task[None] | None = None
    try:
        feeding = asyncio.create_task(
            stream.feed(THREE_TALKERS, seconds=STREAM_S, preroll_seconds=PREROLL_S),
            name="product-stream-feed",
        )
        for _ in range(400):  # the pre-roll's first segments take about a second
            if stream.playlist.exists() or feeding.done():
                break
            await asyncio.sleep(0.05)
        assert stream.playlist.exists(), "the HLS output wrote no playlist"

        async def end_when_fed() -> None:
            await feeding
            await stream.end()  # the last segment and #EXT-X-ENDLIST, as at maxDuration

        ending = asyncio.create_task(end_when_fed(), name="product-stream-end")
        screenshot = artifacts_dir / "player-product-stream.png"
        screenshot.unlink(missing_ok=True)
        report = await drive_player(
            stream.url,
            identities=list(THREE_TALKERS),
            screenshot=screenshot,
            autoplay=False,
            budget_s=STREAM_S + 40,
        )
        await ending
    finally:
        if feeding is not None and not feeding.done():
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
        await stream.stop()
    (artifacts_dir / "player-product-stream-report.json").write_text(
        json.dumps(report.raw, indent=1)
    )
    assert stream.losses() == {"encoder_dropped_frames": 0, "hls_dropped_packets": 0}
    check_played_live_stream(report, identities={"alice": False, "bob": False, "carol": True})
    check_meters_in_sync(report)
    # what was shown is what the stream carried, payload by payload, to the last one
    sent = {p.seq: dict(p.levels) for p in stream.payloads}
    for p in report.shown:
        assert p["levels"] == sent[p["s"]], p
    # to the end: hls.js played the stream's last (short) part once and ended, and the
    # last payload was shown.  (Its cue is excused only if it starts after the media's
    # end: hls.js re-anchored its timeline off the audio's pts after a stall and a seek,
    # the start-up hiccup of docs/reference/player.md's "Low latency", so that cue is
    # never reached.)
    check_ended_at_the_streams_end(report)
    # The last payload is stamped at the stream's very end (each is stamped at the end of
    # the window it describes, issue 26), which playback reaches only as it ends: the one
    # before it must be shown.
    last = stream.payloads[-1].seq
    media_end = report.raw["hlsFinal"]["duration"]
    last_cue = report.shown[-1]["cueStart"] + PAYLOAD_SECONDS * (last - report.shown[-1]["s"])
    if last_cue - PAYLOAD_SECONDS < media_end:
        assert report.shown[-1]["s"] >= last - 1, f"payloads up to {last - 1} not shown"
    assert any(s["endlist"] for s in report.samples), report.summary()
    # and each cue sits on the audio it describes: payload s describes stream time
    # 0.5 s * s .. 0.5 s * (s + 1) and its cue starts where that audio ends, as a level
    # meter shows the last 500 ms (issue 26), within an AAC frame.  The buffered audio starts at the
    # segment (LL-HLS: part) the page joined at, a whole number of them into the stream.
    # LL-HLS (the product's default): hls.js joins at a part, so the join point is a whole
    # number of parts (9 AAC frames); which one is read off the first cue.
    buffered = min(s["buffered"] for s in report.samples if s["buffered"] is not None)
    first = report.shown[0]
    unit = PART_S if stream.low_latency else SEGMENT_S
    window_end = PAYLOAD_SECONDS * (first["s"] + 1)
    joined = round((buffered - first["cueStart"] + window_end) / unit) * unit
    audio_zero = buffered - joined
    for p in report.shown:
        offset = p["cueStart"] - PAYLOAD_SECONDS * (p["s"] + 1) - audio_zero
        assert abs(offset) < CUE_TOLERANCE_S, f"payload {p['s']}'s cue is {offset:+.3f} s off"
    # LL-HLS (config.json lowLatency: the page's hls.js low-latency tuning): once playing,
    # the page's own latency readout stays under liveMaxLatencyDuration (1.6 s; plain
    # hls.js defaults would sit 3 segments = 6 s behind) and playback never stalls.
    live = [s for s in report.samples if s["state"] == "live" and s["latency"] is not None]
    assert len(live) >= 10, report.summary()
    settled = live[2:]
    worst = max(s["latency"] for s in settled)
    assert worst < 1.6, f"live latency up to {worst:.2f} s: {report.summary()}"
    played = settled[-1]["ct"] - settled[0]["ct"]
    assert played > 0.9 * (settled[-1]["t"] - settled[0]["t"]), "playback stalled"
