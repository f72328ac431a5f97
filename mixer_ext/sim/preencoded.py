"""Talkers that send pre-encoded Opus: a load generator that is not the bottleneck (issue 13.4).

A stock aiortc talker encodes every 20 ms frame in an executor thread (about
3.3 % of a core each here), so a benchmark of 20 talkers spends two thirds of
the machine on the senders. These tracks encode a tone *once* (one loop of an
integral number of periods, after priming the encoder for 0.5 s so the loop
joins seamlessly), then replay the packets: ``recv()`` returns ``av.Packet``\\ s,
which aiortc's ``RTCRtpSender`` only packetizes (``OpusEncoder.pack``), never
encodes. Frames are paced from a fixed monotonic start (``start + n * 20 ms``)
so scheduling error never accumulates, and many tracks share one encoded loop.

``PreEncodedOpusTrack(loop, silent=True)`` sends the tiny DTX frame libopus
emits for digital silence instead of the tone, for the "silent participants cost
next to nothing" checks, as a WebRTC sender with DTX does: libopus marks a payload
of 2 bytes or less "need not be transmitted", and libwebrtc sends one packet every
400 ms while silent (``dtx_every=20`` frames, the timestamps jumping over the
gap).  ``dtx_every=1`` sends it every 20 ms (the worst case: a sender that
transmits everything, as aiortc's would).
"""

from __future__ import annotations

import asyncio
import math
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960
PTIME = FRAME_SAMPLES / SAMPLE_RATE
TIME_BASE = Fraction(1, SAMPLE_RATE)


class OpusLoop:
    """One encoded loop of 20 ms Opus payloads, shared by any number of tracks."""

    def __init__(self, payloads: list[bytes], silence: bytes, channels: int) -> None:
        if not payloads:
            raise ValueError("an Opus loop needs at least one payload")
        self.payloads = payloads
        self.silence = silence
        self.channels = channels


def _encoder(channels: int, bitrate: int) -> av.AudioCodecContext:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "stereo" if channels == 2 else "mono"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    ctx.options = {"application": "audio", "frame_duration": "20"}
    ctx.open()
    return ctx


def _encode_frames(
    ctx: av.AudioCodecContext, blocks: list[np.ndarray], channels: int
) -> list[bytes]:
    out: list[bytes] = []
    layout = "stereo" if channels == 2 else "mono"
    for i, mono in enumerate(blocks):
        data = np.repeat(mono, channels).reshape(1, channels * FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i * FRAME_SAMPLES
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


def encode_tone(
    frequency: float, level: float = 0.3, *, channels: int = 1, bitrate: int = 32_000
) -> OpusLoop:
    """Encode a sine of ``frequency`` Hz once into a seamless loop of Opus payloads.

    The loop spans the shortest whole number of 20 ms frames holding a whole
    number of periods (at most 1 s, exact for any frequency that is a multiple
    of 1 Hz).
    """
    if not 20 <= frequency <= 20_000:
        raise ValueError(f"tone frequency must be 20..20000 Hz, got {frequency}")
    if not 0 <= level <= 1:
        raise ValueError(f"level must be 0..1, got {level}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    frames = 50
    for k in range(1, 51):
        if abs(frequency * k * PTIME - round(frequency * k * PTIME)) < 1e-9:
            frames = k
            break
    # Prime the encoder for at least 0.5 s (its look-ahead and start-up ramp), then
    # keep the last loop: periodic in the tone, so it replays without a seam.
    total = frames * (-(-25 // frames) + 1)
    t = np.arange(total * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = np.round(level * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
    blocks = [pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(total)]
    payloads = _encode_frames(_encoder(channels, bitrate), blocks, channels)
    loop = payloads[-frames:]
    silent_blocks = [np.zeros(FRAME_SAMPLES, np.int16)] * 10
    ctx = _encoder(channels, bitrate)
    ctx.options = {"application": "audio", "frame_duration": "20", "dtx": "1"}
    silence = _encode_frames(ctx, silent_blocks, channels)[-1]
    return OpusLoop(loop, silence, channels)


class PreEncodedOpusTrack(MediaStreamTrack):
    """An audio track whose ``recv()`` replays an ``OpusLoop`` as ``av.Packet``\\ s."""

    kind = "audio"

    def __init__(
        self, loop: OpusLoop, *, silent: bool = False, offset: int = 0, dtx_every: int = 20
    ) -> None:
        super().__init__()
        if dtx_every < 1:
            raise ValueError(f"dtx_every must be >= 1 frame, got {dtx_every}")
        self.loop = loop
        self.silent = silent
        self.dtx_every = dtx_every
        self._offset = offset
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> Any:  # an av.Packet: aiortc's sender only packetizes it
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._n * PTIME
        if due > now:
            await asyncio.sleep(due - now)
        if self.silent:
            payload = self.loop.silence
        else:
            payloads = self.loop.payloads
            payload = payloads[(self._n + self._offset) % len(payloads)]
        packet = av.Packet(payload)
        packet.pts = self._n * FRAME_SAMPLES
        packet.time_base = TIME_BASE
        self._n += self.dtx_every if self.silent else 1
        return packet
