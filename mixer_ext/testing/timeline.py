"""Decode an audio file onto its own timeline (gaps kept), for tests and benchmarks.

A player (and ``ffmpeg``) fills a gap in a file's timestamps with silence; PyAV hands
the frames as they are, so ``decode_timeline`` places each decoded frame at its pts.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from mixer_ext.core.frames import SAMPLE_RATE
from mixer_ext.testing.spectrum import amplitude_at

FloatArray = npt.NDArray[np.float64]


def decode_timeline(path: Path, *, keep_start: bool = False) -> FloatArray:
    """The file's first audio stream as mono float (-1..1) at 48 kHz, frames placed by pts.

    Time 0 is the first frame's pts unless ``keep_start`` (then the file's own zero).
    Decoding stops quietly at a truncated end (what a killed writer leaves).
    """
    chunks: list[tuple[int, FloatArray]] = []
    first: int | None = None
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                start = round(float(frame.time or 0.0) * SAMPLE_RATE)
                for out in resampler.resample(frame):
                    chunks.append((start, out.to_ndarray()[0].astype(np.float64)))
                    start += out.samples
                    if first is None:
                        first = chunks[-1][0]
        except (av.error.InvalidDataError, av.error.EOFError):
            pass
    if not chunks:
        return np.zeros(0)
    zero = 0 if keep_start else (first or 0)
    end = max(s + len(c) for s, c in chunks) - zero
    out_arr = np.zeros(max(end, 0))
    for s, c in chunks:
        s -= zero
        if s < 0:
            c, s = c[-s:], 0
        out_arr[s : s + len(c)] = c[: len(out_arr) - s]
    return out_arr


def tone_level(signal: FloatArray, freq: float, start: float, end: float) -> float:
    """Amplitude (0..1) of the sine at ``freq`` Hz between ``start`` and ``end`` seconds."""
    a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
    window = signal[a:b]
    if len(window) < 480:
        return 0.0
    return amplitude_at(window, freq)
