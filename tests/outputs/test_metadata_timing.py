"""Timed metadata is never behind the audio it rides with (issue 26).

The payload describing a 500 ms window can only be built once the window's audio is
mixed; stamped with the window's start, it reached a player about 0.55 s after its own
media time, so a player 0.6-0.8 s behind live got it as (or after) the playhead reached
it.  The product stamps each payload at the end of its window instead
(docs/reference/outputs.md, "Timed metadata"); these tests check what a player or an
RTMP receiver gets.

* LL-HLS parts and plain HLS segments, written by the real ``Mixer`` ->
  ``OutputPipeline`` -> ``HlsOutput`` and parsed back: every ID3 PES has a PTS no earlier
  than the first audio PTS of the part (segment) carrying it minus one AAC frame, it is
  in the stream no later than the first part holding the audio at its timestamp, and
  payload ``s`` is stamped exactly ``(s + 1) * 0.5 s`` after stream time 0.
* RTMP (tests/outputs/test_rtmp.py's ffmpeg listener): no ``onTextData`` timestamp is
  behind the audio received before it.
* ``/ws/metadata``: each payload reaches a client before the part holding the audio at
  its timestamp is written.

The browser check (hls.js at 0.6-0.8 s latency, cues counted only when seen before their
time) is tests/browser/test_metadata_cues.py.
"""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import av
import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.clock import MixerClock
from mixer_ext.core.frames import PAYLOAD_SAMPLES, SAMPLE_RATE
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.outputs.carriers import parse_amf0_on_text_data, parse_id3_txxx
from mixer_ext.serve.http import HttpEndpoint
from mixer_ext.settings import HlsPlaylistType, Settings
from mixer_ext.testing.feed import flv_tags
from tests.support.env import free_port, require_program
from tests.support.rtmp import KEY, FfmpegListener

#: MPEG-TS clock
TS_HZ = 90_000
#: one AAC frame (1024 samples at 48 kHz) in 90 kHz ticks
AAC_FRAME_TS = 1024 * TS_HZ // SAMPLE_RATE
#: and in FLV milliseconds (rounded up)
AAC_FRAME_MS = 22
#: stream seconds written per run
STREAM_S = 8.0
_PART = re.compile(r"^part-(\d{6,})-(\d+)\.ts$")
_SEG = re.compile(r"^seg-(\d{6,})\.ts$")


@dataclass
class Carrier:
    """One part or segment as a player gets it: its audio span and the tags it carries."""

    name: str
    #: 90 kHz PTS of its first audio packet, and where its last one ends
    audio_start: int
    audio_end: int
    #: (90 kHz PTS, payload) of every ID3 PES in it
    tags: list[tuple[int, MetadataPayload]]


def read_carrier(path: Path) -> Carrier:
    starts: list[int] = []
    ends: list[int] = []
    tags: list[tuple[int, MetadataPayload]] = []
    with av.open(io.BytesIO(path.read_bytes()), format="mpegts") as container:
        for packet in container.demux():
            if packet.pts is None or packet.size == 0:
                continue
            ticks = int(packet.pts * packet.time_base * TS_HZ)
            if packet.stream.type == "audio":
                starts.append(ticks)
                ends.append(ticks + int((packet.duration or 0) * packet.time_base * TS_HZ))
            elif packet.stream.type == "data":
                for _desc, value in parse_id3_txxx(bytes(packet)):
                    tags.append((ticks, MetadataPayload.from_json(value)))
    assert starts, f"{path.name} holds no audio"
    return Carrier(path.name, min(starts), max(ends), tags)


async def write_stream(hls_dir: Path, *, low_latency: bool) -> list[MetadataPayload]:
    """``STREAM_S`` of the real mixer's output (one muted participant) through the real
    pipeline into an EVENT playlist (every part kept), as fast as the encoder takes it."""
    settings = Settings(
        hls_dir=hls_dir,
        hls_low_latency=low_latency,
        hls_playlist_type=HlsPlaylistType.EVENT,
    )
    pipeline = OutputPipeline([parse_output("hls:main")], 128, settings)
    await pipeline.start()
    mixer = Mixer(exclude_identity="audio-mixer-v1")
    mixer.add_participant("alice")
    payloads: list[MetadataPayload] = []
    try:
        for _ in range(round(STREAM_S * SAMPLE_RATE / mixer.tick_samples)):
            frame, payload = mixer.tick()
            pipeline.on_mix(frame)
            if payload is not None:
                payloads.append(payload)
                pipeline.on_payload(payload)
            while pipeline.status()["encoder"]["queued"] > 32:  # noqa: ASYNC110 - a thread's queue
                await asyncio.sleep(0.002)
    finally:
        await pipeline.close()
    assert pipeline.status()["encoder"]["dropped_frames"] == 0
    return payloads


def carriers(directory: Path, pattern: re.Pattern[str]) -> list[Carrier]:
    found = []
    for path in directory.iterdir():
        m = pattern.match(path.name)
        if m:
            found.append((tuple(int(g) for g in m.groups()), path))
    return [read_carrier(path) for _key, path in sorted(found)]


def check_tags_ride_with_their_audio(items: list[Carrier], sent: list[MetadataPayload]) -> None:
    tags = [(i, pts, p) for i, c in enumerate(items) for pts, p in c.tags]
    assert [p.seq for _i, _pts, p in tags] == [p.seq for p in sent], "payloads lost or reordered"
    # stream time 0 is one AAC frame after the first packet (the encoder's priming)
    zero = items[0].audio_start + AAC_FRAME_TS
    for i, pts, payload in tags:
        carrier = items[i]
        # by pts, never behind the audio it rides with
        assert pts >= carrier.audio_start - AAC_FRAME_TS, (
            f"payload {payload.seq} (pts {pts}) rides in {carrier.name}, whose audio starts "
            f"{(carrier.audio_start - pts) / TS_HZ:.3f} s after it"
        )
        # and in the stream no later than the first part holding the audio at its pts
        holding = next(
            (j for j, c in enumerate(items) if c.audio_start <= pts < c.audio_end), len(items)
        )
        assert i <= holding, f"payload {payload.seq} is in {carrier.name}, after its audio"
        # and stamped as documented: the documented stamp: the end of the window described
        expected = zero + (payload.seq + 1) * PAYLOAD_SAMPLES * TS_HZ // SAMPLE_RATE
        assert pts == expected, f"payload {payload.seq} stamped {pts - zero} ticks into the stream"


@pytest.mark.slow
async def test_ll_hls_parts_carry_each_tag_no_later_than_its_audio(tmp_path: Path) -> None:
    sent = await write_stream(tmp_path, low_latency=True)
    directory = tmp_path / "main"
    parts = carriers(directory, _PART)
    assert len(parts) > 30, [p.name for p in parts]
    check_tags_ride_with_their_audio(parts, sent)
    # the segments (each the concatenation of its parts), as a plain HLS player reads them
    check_tags_ride_with_their_audio(carriers(directory, _SEG), sent)


async def test_plain_hls_segments_carry_each_tag_no_later_than_its_audio(
    tmp_path: Path,
) -> None:
    sent = await write_stream(tmp_path, low_latency=False)
    segments = carriers(tmp_path / "main", _SEG)
    assert len(segments) >= 3
    check_tags_ride_with_their_audio(segments, sent)


class InOrderListener(FfmpegListener):
    """``ffmpeg -listen 1`` recording what it reads, in the order it reads it: timestamps
    unchanged (``-copyts``) and nothing re-sorted by its own muxer (``max_interleave_delta``
    1 µs; at its 10 s default the recording would be sorted by timestamp whatever came
    first on the wire)."""

    def __init__(self, port: int, out: Path) -> None:
        ffmpeg = require_program("ffmpeg")
        self.out = out
        self.proc = subprocess.Popen(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-copyts",
             "-analyzeduration", "1500000", "-listen", "1",
             "-i", f"rtmp://127.0.0.1:{port}/live/{KEY}",
             "-map", "0", "-c", "copy", "-max_interleave_delta", "1", "-f", "flv", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip


@pytest.mark.rtmp
async def test_rtmp_on_text_data_is_never_behind_the_audio_sent_before_it(
    tmp_path: Path,
) -> None:
    """The real mixer's payloads over RTMP to ffmpeg's listener (``-copyts``: it records
    the timestamps it read, in the order it read them)."""
    port = free_port()
    listener = InOrderListener(port, tmp_path / "got.flv")
    pipeline = OutputPipeline(
        [parse_output(f"rtmp://127.0.0.1:{port}/live/{KEY}")],
        96,
        Settings(rtmp_reconnect_max_delay=1.0),
        rtmp_first_delay=0.2,
    )
    await pipeline.start()
    mixer = Mixer(exclude_identity="audio-mixer-v1")
    mixer.add_participant("alice")
    sent: list[MetadataPayload] = []
    try:
        # real time until connected (what the mixer made before is dropped, as live)
        start = time.monotonic()
        while pipeline.outputs[0].state.value != "running":
            assert time.monotonic() - start < 15, pipeline.status()
            frame, payload = mixer.tick()
            pipeline.on_mix(frame)
            if payload is not None:
                pipeline.on_payload(payload)
            await asyncio.sleep(0.02)
        for _ in range(round(5.0 * SAMPLE_RATE / mixer.tick_samples)):
            frame, payload = mixer.tick()
            pipeline.on_mix(frame)
            if payload is not None:
                sent.append(payload)
                pipeline.on_payload(payload)
            while any(o._queue.qsize() > 64 for o in pipeline.outputs):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)
    finally:
        await pipeline.close()
    listener.stop(wait_end=5.0)
    err = listener.proc.stderr.read().decode(errors="replace") if listener.proc.stderr else ""
    assert listener.proc.returncode == 0, err

    got: list[int] = []
    audio_before = -1
    for kind, ts, body in flv_tags(listener.out.read_bytes()):
        if kind == 8 and body[1:2] == b"\x01":  # an AAC frame
            audio_before = max(audio_before, ts)
        elif kind == 18 and body.startswith(b"\x02\x00\x0aonTextData"):
            payload = MetadataPayload.from_json(parse_amf0_on_text_data(body))
            got.append(payload.seq)
            assert ts >= audio_before - AAC_FRAME_MS, (
                f"payload {payload.seq} stamped {ts} ms arrived after audio up to {audio_before} ms"
            )
    assert len(got) >= 9 and got == list(range(got[0], got[0] + len(got))), got
    assert got[-1] == sent[-1].seq


@pytest.mark.slow
async def test_websocket_sends_each_payload_before_its_audio_is_published(
    tmp_path: Path,
) -> None:
    """The real mixer clock, pipeline and endpoint: each payload reaches a ``/ws/metadata``
    client before the LL-HLS part holding the audio at its timestamp is written (and so
    before any listener can hear that audio)."""
    settings = Settings(
        hls_dir=tmp_path,
        hls_playlist_type=HlsPlaylistType.EVENT,
        http_host="127.0.0.1",
        http_port=0,
    )
    pipeline = OutputPipeline([parse_output("hls:main")], 128, settings)
    await pipeline.start()
    endpoint = HttpEndpoint(settings, tmp_path, None, "main", pipeline)
    await endpoint.start()
    mixer = Mixer(exclude_identity="audio-mixer-v1")
    mixer.add_participant("alice")
    clock = MixerClock(mixer, pipeline)
    arrived: dict[int, float] = {}  # s -> wall time the client got it
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{endpoint.port}/ws/metadata") as ws,
        ):
            await asyncio.sleep(0.1)  # the server has registered the client
            clock.start()
            while len(arrived) < 8:
                msg = await ws.receive(timeout=5)
                arrived[MetadataPayload.from_json(msg.data).seq] = time.time()
    finally:
        await clock.stop()
        await pipeline.close()
        await endpoint.stop()
    parts = sorted(
        (tuple(int(g) for g in m.groups()), p)
        for p in (tmp_path / "main").iterdir()
        if (m := _PART.match(p.name))
    )
    spans = [(read_carrier(path), path.stat().st_mtime) for _key, path in parts]
    # each payload's timestamp as the stream carries it (its ID3 tag's PTS)
    stamped = {p.seq: pts for c, _w in spans for pts, p in c.tags}
    for seq, at in arrived.items():
        pts = stamped[seq]
        written = next(w for c, w in spans if c.audio_start <= pts < c.audio_end)
        assert at <= written, f"payload {seq} reached the WebSocket {at - written:.3f} s late"
