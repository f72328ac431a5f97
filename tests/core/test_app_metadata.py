"""An app's timed metadata (POST .../TimedMetadata) on the mixer's own metadata path.

The core's stamping rules are checked exactly with a hand-driven ``Mixer``; then the real
mixer clock, encoder fan-out and outputs carry app strings beside the mixer's payloads
into HLS (read back as a player does), a ``.ts`` recording and RTMP (ffmpeg's listener
keeps the AMF data), each at the stream time it was posted at.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.clock import MixerClock
from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES, TICKS_PER_PAYLOAD
from mixer_ext.core.mixer import APP_INBOX, Mixer
from mixer_ext.core.payload import MAX_APP_METADATA_BYTES, AppPayload, MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.outputs.carriers import (
    amf0_for,
    id3_for,
    parse_amf0_text_fields,
    parse_id3_txxx,
)
from mixer_ext.settings import HlsPlaylistType, Settings
from tests.support.env import free_port
from tests.support.hls_reader import read_hls, read_ts
from tests.support.rtmp import KEY, FfmpegListener

WINDOW = TICK_SAMPLES * TICKS_PER_PAYLOAD


def _ticks(mixer: Mixer, n: int) -> list[MetadataPayload | AppPayload]:
    """Run ``n`` ticks as the clock does; every payload in the order the outputs get it."""
    out: list[MetadataPayload | AppPayload] = []
    for _ in range(n):
        _frame, payload = mixer.tick()
        out.extend(mixer.take_app_payloads())
        if payload is not None:
            out.append(payload)
    return out


def test_app_payloads_are_stamped_now_and_handed_out_at_the_next_tick() -> None:
    mixer = Mixer()
    _ticks(mixer, 10)
    assert mixer.post_app_metadata("poll:1")  # stamped with tick 10
    assert mixer.post_app_metadata('{"s":1,"p":{}}')  # same tick: one sample later
    got = _ticks(mixer, 1)  # out right after tick 10, not held to the window's end
    assert got == [
        AppPayload("poll:1", 10 * TICK_SAMPLES),
        AppPayload('{"s":1,"p":{}}', 10 * TICK_SAMPLES + 1),
    ]
    # posted before a window's last tick: out before that window's payload (stamped at
    # the window's end, issue 26), so the timestamps rise
    _ticks(mixer, 13)
    assert mixer.post_app_metadata("last tick")
    got = _ticks(mixer, 1)
    assert got == [
        AppPayload("last tick", WINDOW - TICK_SAMPLES),
        MetadataPayload(seq=0, levels={}, pts=WINDOW),
    ]
    # posted after it: at the same stream time as that payload, so one sample later
    assert mixer.post_app_metadata("next")
    assert _ticks(mixer, 1) == [AppPayload("next", WINDOW + 1)]
    # every timestamp handed out rises
    mixer2 = Mixer()
    seen: list[int] = []
    for i in range(200):
        if i % 7 == 0:
            mixer2.post_app_metadata(f"a{i}")
        seen += [p.pts for p in _ticks(mixer2, 1)]
    assert len(seen) == 8 + 29 and seen == sorted(seen) and len(set(seen)) == len(seen)


def test_app_inbox_is_bounded_and_strings_are_limited() -> None:
    mixer = Mixer()
    for i in range(APP_INBOX):
        assert mixer.post_app_metadata(str(i))
    assert not mixer.post_app_metadata("one too many")  # refused, nothing kept
    assert len(_ticks(mixer, TICKS_PER_PAYLOAD)) == 1 + APP_INBOX
    with pytest.raises(ValueError, match="1025 bytes"):
        mixer.post_app_metadata("x" * (MAX_APP_METADATA_BYTES + 1))
    assert mixer.post_app_metadata("é" * (MAX_APP_METADATA_BYTES // 2))


def test_carriers_tell_app_payloads_apart() -> None:
    mixer_tag = id3_for(MetadataPayload(seq=3, levels={"a": 1}))
    app_tag = id3_for(AppPayload('{"slide": 4}'))
    assert parse_id3_txxx(mixer_tag) == [("", '{"s":3,"p":{"a":{"v":1}}}')]
    assert parse_id3_txxx(app_tag) == [("app", '{"slide": 4}')]
    assert parse_amf0_text_fields(amf0_for(AppPayload("hi"))) == {
        "type": "Text",
        "text": "hi",
        "source": "app",
    }
    assert "source" not in parse_amf0_text_fields(amf0_for(MetadataPayload(seq=0, levels={})))


@pytest.mark.rtmp
async def test_app_metadata_reaches_hls_recording_and_rtmp_at_its_stream_time(
    tmp_path: Path,
) -> None:
    port = free_port()
    listener = FfmpegListener(port, tmp_path / "got.flv")
    settings = Settings(
        hls_dir=tmp_path / "hls",
        hls_playlist_type=HlsPlaylistType.EVENT,
        rtmp_reconnect_max_delay=1.0,
    )
    specs = [
        parse_output("hls:show"),
        parse_output(f"rtmp://127.0.0.1:{port}/live/{KEY}"),
        parse_output(f"file:{tmp_path / 'rec.ts'}"),
    ]
    pipeline = OutputPipeline(specs, 96, settings, rtmp_first_delay=0.2)
    await pipeline.start()
    mixer = Mixer()
    clock = MixerClock(mixer, pipeline)
    clock.start()
    posted: list[tuple[str, int]] = []
    texts = ["poll:open", '{"slide":2,"title":"Überblick"}', '{"s":9,"p":"app JSON"}']
    try:
        deadline = time.monotonic() + 15
        while not all(o.state.value == "running" for o in pipeline.outputs):
            assert time.monotonic() < deadline, pipeline.status()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.6)
        for text in texts:
            pts = mixer.tick_index * TICK_SAMPLES
            assert mixer.post_app_metadata(text)
            posted.append((text, pts))
            await asyncio.sleep(0.73)
        await asyncio.sleep(1.5)
    finally:
        await clock.stop()
        await pipeline.close()
    listener.stop(wait_end=5.0)

    # HLS, as a player reads it: each string once, in order, at the stream time it was
    # posted at (exactly: stamped with the tick that was due)
    hls = read_hls(tmp_path / "hls" / "show")
    assert hls.ended
    assert [t for _, t in hls.app_payloads] == texts
    for (t, _text), (_, pts) in zip(hls.app_payloads, posted, strict=True):
        assert t == pytest.approx(pts / SAMPLE_RATE, abs=1e-4)
    seqs = [p.seq for _, p in hls.payloads]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 8  # the mixer's, unbroken
    # the recording keeps them in-band too
    rec = read_ts((tmp_path / "rec.ts").read_bytes())
    assert [t for _, t in rec.app_payloads] == texts
    # RTMP: onTextData, timed like the mixer's payloads around it (FFmpeg's relay keeps
    # the text alone, not the "source" marker: see FfmpegListener.app_payloads)
    app = listener.app_payloads()
    assert [t for _, t in app] == texts
    mine = listener.payloads()
    assert [p.seq for p in mine] == list(range(mine[0].seq, mine[0].seq + len(mine)))
    flv = dict(zip([p.seq for p in mine], listener.payload_times(), strict=True))
    checked = 0
    for (ts, _text), (_, pts) in zip(app, posted, strict=True):
        # the FLV clock is the stream's, shifted by where the connection started; the
        # payload of window w is stamped at its end (issue 26)
        window = pts // WINDOW
        if window in flv:
            expected = flv[window] - ((window + 1) * WINDOW - pts) * 1000 // SAMPLE_RATE
            assert abs(ts - expected) <= 2, (ts, expected)
            checked += 1
    assert checked == len(texts), flv
