"""Synthetic audio sources for talkers, demos, tests and benchmarks, and the publisher's mute.

``MutingTrack`` wraps what a participant publishes and sends silence of the same format
while it is disabled, so the receivers' timeline keeps going.

``ToneTrack`` and ``WavTrack`` are paced from a fixed start (``start + n * 20 ms``) with pts
in samples at 48 kHz: they never drift.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES

AUDIO_PTIME = TICK_SAMPLES / SAMPLE_RATE
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class PacedAudioTrack(MediaStreamTrack):
    """Base of synthetic sources: 20 ms s16 frames at 48 kHz, paced from a fixed start.

    The source is mono (``samples(n)``); frames carry it on both stereo channels.

    Frame ``n`` has ``pts = n * 960`` and is returned no earlier than
    ``start + n * 20 ms`` (monotonic), so scheduling error never accumulates.
    Subclasses implement ``samples(n)`` returning 960 int16 samples.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._n = 0

    def samples(self, n: int) -> np.ndarray:
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._n * AUDIO_PTIME
        if due > now:
            await asyncio.sleep(due - now)
        mono = self.samples(self._n).astype(np.int16)
        # Sent as packed stereo: aiortc's Opus encoder converts mono to stereo through
        # FFmpeg's upmix at -3 dB, so a "0.3" tone would reach listeners at 0.21.
        data = np.repeat(mono, 2).reshape(1, 2 * TICK_SAMPLES)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n * TICK_SAMPLES
        frame.time_base = TIME_BASE
        self._n += 1
        return frame


class ToneTrack(PacedAudioTrack):
    """A clean sine of ``frequency`` Hz at ``level`` (0..1 of full scale)."""

    def __init__(self, frequency: float, level: float = 0.3) -> None:
        super().__init__()
        if not 20 <= frequency <= 20_000:
            raise ValueError(f"tone frequency must be 20..20000 Hz, got {frequency}")
        if not 0 <= level <= 1:
            raise ValueError(f"level must be 0..1, got {level}")
        self.frequency = frequency
        self.level = level

    def samples(self, n: int) -> np.ndarray:
        t = (np.arange(TICK_SAMPLES) + n * TICK_SAMPLES) / SAMPLE_RATE
        return np.round(self.level * 32767 * np.sin(2 * math.pi * self.frequency * t))


class WavTrack(PacedAudioTrack):
    """A sound file (anything FFmpeg reads), decoded once to 48 kHz mono, looped."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.pcm = load_pcm(path)
        if len(self.pcm) == 0:
            raise ValueError(f"{path}: no audio")

    @property
    def duration(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    def samples(self, n: int) -> np.ndarray:
        idx = (np.arange(TICK_SAMPLES) + n * TICK_SAMPLES) % len(self.pcm)
        return self.pcm[idx]


def load_pcm(path: Path) -> np.ndarray:
    """Decode ``path`` to int16 mono at 48 kHz; ``ValueError`` with one line if unreadable."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot read audio ({exc.__class__.__name__})") from None
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


class MutingTrack(MediaStreamTrack):
    """Passes ``source`` through, or silence of the same shape while ``enabled`` is False."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.enabled = True

    async def recv(self) -> av.AudioFrame:
        frame = await self.source.recv()
        if not isinstance(frame, av.AudioFrame):
            raise MediaStreamError("not an audio frame")
        if self.enabled:
            return frame
        silent = av.AudioFrame.from_ndarray(
            np.zeros_like(frame.to_ndarray()), format=frame.format.name, layout=frame.layout.name
        )
        silent.sample_rate = frame.sample_rate
        silent.pts = frame.pts
        silent.time_base = frame.time_base
        return silent

    def stop(self) -> None:
        super().stop()
        self.source.stop()
