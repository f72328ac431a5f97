"""The product's own HLS path, fed a synthetic mix of known tones and levels.

``ProductStream`` is what a worker runs behind its mixer clock: ``OutputPipeline``
(AAC encoded once, in its thread) -> ``HlsOutput`` (MPEG-TS segments with the ID3
payloads, the live playlist, #EXT-X-ENDLIST at the end) -> ``HttpEndpoint`` (the player
page, ``/config.json``, ``/hls/<name>/...``).  Only the mixer is replaced: ``feed``
hands the pipeline the mixed frames and payloads of ``Voice`` tones the way
``MixerClock`` does (``on_mix`` every 20 ms from a fixed start, ``on_payload`` after the
25th tick of each 500 ms window, stamped as the mixer stamps it: at the window's end,
issue 26), so a test
knows exactly which levels the player must show when it plays which audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixer_ext.context import parse_output
from mixer_ext.core.frames import (
    PAYLOAD_SAMPLES,
    SAMPLE_RATE,
    TICK_SAMPLES,
    TICK_SECONDS,
    TICKS_PER_PAYLOAD,
    MixedFrame,
)
from mixer_ext.core.payload import MUTED, MetadataPayload
from mixer_ext.encode.fanout import ENCODER_QUEUE, OutputPipeline
from mixer_ext.serve.http import HttpEndpoint
from mixer_ext.settings import Settings
from tests.support.player_util import PLAYER_DIR, Voice

#: the bitrate a worker uses by default (kbps)
BITRATE = 128


@dataclass
class ProductStream:
    """One HLS output of the real pipeline, served by the real endpoint on 127.0.0.1."""

    hls_dir: Path
    name: str = "main"
    segment_seconds: float = 2.0
    list_size: int = 6
    #: MIXER_HLS_LOW_LATENCY (the product's default: on)
    low_latency: bool = True
    #: every payload handed to the pipeline, in order
    payloads: list[MetadataPayload] = field(default_factory=list)
    pipeline: OutputPipeline | None = None
    endpoint: HttpEndpoint | None = None

    @property
    def url(self) -> str:
        assert self.endpoint is not None and self.endpoint.port, "start() first"
        return f"http://127.0.0.1:{self.endpoint.port}/"

    @property
    def playlist(self) -> Path:
        return self.hls_dir / self.name / "index.m3u8"

    async def start(self) -> None:
        settings = Settings(
            hls_dir=self.hls_dir,
            hls_segment_duration=self.segment_seconds,
            hls_list_size=self.list_size,
            hls_low_latency=self.low_latency,
            http_host="127.0.0.1",
            http_port=0,
        )
        self.pipeline = OutputPipeline([parse_output(f"hls:{self.name}")], BITRATE, settings)
        await self.pipeline.start()
        self.endpoint = HttpEndpoint(settings, self.hls_dir, PLAYER_DIR, self.name, self.pipeline)
        await self.endpoint.start()

    async def feed(
        self, voices: Mapping[str, Voice], *, seconds: float, preroll_seconds: float = 0.0
    ) -> None:
        """The mix of ``voices`` for ``seconds``: the first ``preroll_seconds`` at once (a
        stream already running when the page opens, never faster than the encoder takes
        it), the rest in real time from a fixed start, as the clock ticks."""
        pipeline = self.pipeline
        assert pipeline is not None, "start() first"
        windows = round(seconds * SAMPLE_RATE / PAYLOAD_SAMPLES)
        preroll_ticks = round(preroll_seconds / TICK_SECONDS)
        t0: float | None = None
        for window in range(windows):
            start = window * PAYLOAD_SAMPLES
            tracks = {name: v.window(window, start) for name, v in voices.items()}
            mix = np.clip(sum(x.astype(np.int32) for x in tracks.values()), -32767, 32767)
            stereo = np.repeat(mix.astype(np.int16), 2).reshape(-1, 2)
            for i in range(TICKS_PER_PAYLOAD):
                tick = window * TICKS_PER_PAYLOAD + i
                if tick < preroll_ticks:
                    while pipeline.status()["encoder"]["queued"] > ENCODER_QUEUE // 4:  # noqa: ASYNC110 - a thread's queue
                        await asyncio.sleep(0.005)
                else:
                    if t0 is None:
                        t0 = time.monotonic() - tick * TICK_SECONDS
                    delay = t0 + tick * TICK_SECONDS - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                block = stereo[i * TICK_SAMPLES : (i + 1) * TICK_SAMPLES]
                pipeline.on_mix(MixedFrame(pts=start + i * TICK_SAMPLES, samples=block))
            levels = {
                name: MUTED if voices[name].muted else int(np.max(np.abs(x.astype(np.int32))))
                for name, x in tracks.items()
            }
            payload = MetadataPayload(seq=window, levels=levels, pts=start + PAYLOAD_SAMPLES)
            self.payloads.append(payload)
            pipeline.on_payload(payload)

    async def end(self, end_of_stream: bool = True) -> None:
        """End the stream: the last segment and #EXT-X-ENDLIST (the endpoint keeps serving,
        as a worker's does for ``http_linger``, so a player fetches the end)."""
        if self.pipeline is not None:
            await self.pipeline.close(end_of_stream)

    async def stop(self) -> None:
        """End the stream if not yet ended, then stop serving."""
        await self.end()
        if self.endpoint is not None:
            await self.endpoint.stop()

    def losses(self) -> dict[str, int]:
        """Frames the encoder dropped and packets the HLS output dropped (both 0 when well)."""
        assert self.pipeline is not None
        status = self.pipeline.status()
        return {
            "encoder_dropped_frames": status["encoder"]["dropped_frames"],
            "hls_dropped_packets": sum(o["dropped_packets"] for o in status["outputs"]),
        }
