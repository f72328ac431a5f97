"""One mixer input per subscribed audio track: decoded frames in, one tick out.

The reader task (``MixerClock``) pushes every decoded frame as it comes;
the mixer pulls exactly one tick per tick.  Frames may come in any sample
rate, layout and format: they are resampled once to 48 kHz stereo s16 and
re-stamped on a 48 kHz pts line (the resampler's own pts are not used, so a
sender's pts jump across a DTX/mute gap survives resampling).  The jitter
buffer, concealment and drift handling live in ``JitterBuffer``
(``mixer_ext.core.jitter``), whose stats this class exposes as attributes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES, Int16Block
from mixer_ext.core.jitter import JitterBuffer
from mixer_ext.settings import JitterBufferSize

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

#: a resampled stream whose next pts is this far off (1 ms) restarts its resampler
_RESAMPLE_RESTART_SAMPLES = 48
_RTP_RANGE = 1 << 32
_HALF_RTP_RANGE = 1 << 31


class Input(JitterBuffer):
    """One audio track feeding the mix.

    ``push(frame, arrival)``: ``arrival`` is when the frame arrived, in
    seconds on the mixer timeline (tick ``n`` runs at ``n * 0.020``), as the
    clock runner measures it; ``None`` means "before the next tick".  Frames
    without a pts continue the previous one; a pts that falls back by more
    than 2**31 is a wrapped 32-bit RTP timestamp and is unwrapped.  ``pull()`` is
    ``JitterBuffer.pull``: int16 ``(960, 2)`` every tick, silence when empty.
    """

    def __init__(
        self,
        jitter: JitterBufferSize = JitterBufferSize.MEDIUM,
        *,
        tick_samples: int = TICK_SAMPLES,
        start_tick: int = 0,
    ) -> None:
        super().__init__(
            jitter.milliseconds * SAMPLE_RATE // 1000,
            tick_samples=tick_samples,
            start_tick=start_tick,
        )
        self.jitter = jitter
        self._resampler: av.AudioResampler | None = None
        self._in_next: int | None = None  # 48 kHz pts the next input frame should have
        self._out_next = 0  # 48 kHz pts of the resampler's next output sample
        self._channels = 2  # of the resampler's output (mono is duplicated after it)
        self._unwrap = 0  # added to pts after a 32-bit RTP timestamp wrapped

    def push(self, frame: av.AudioFrame, arrival: float | None = None) -> None:
        """Resample (if needed), re-stamp and buffer one decoded frame."""
        if frame.samples == 0:
            return
        tb = frame.time_base
        if frame.pts is None or tb is None:
            pts = self._in_next if self._in_next is not None else 0
        elif tb.numerator == 1 and tb.denominator == SAMPLE_RATE:  # aiortc's Opus: no Fractions
            pts = frame.pts + self._unwrap
        else:
            pts = round(frame.pts * tb * SAMPLE_RATE) + self._unwrap
        if self._in_next is not None and pts < self._in_next - _HALF_RTP_RANGE:
            # aiortc hands out the 32-bit RTP timestamp: it wraps every 24.9 h at 48 kHz
            self._unwrap += _RTP_RANGE
            pts += _RTP_RANGE
        arrival_samples = None if arrival is None else arrival * SAMPLE_RATE
        rate = frame.sample_rate
        n = frame.samples
        expected = self._in_next
        self._in_next = pts + (n if rate == SAMPLE_RATE else (n * SAMPLE_RATE) // rate)
        if rate == SAMPLE_RATE and frame.format.name == "s16" and frame.layout.name == "stereo":
            # packed s16 stereo (aiortc's decoder output): read the plane as it is
            plane = memoryview(frame.planes[0])
            packed: Int16Block = np.frombuffer(plane, np.int16, 2 * n).reshape(n, 2)
            self.push_samples(pts, packed, arrival_samples)
            return
        import av

        if (
            self._resampler is None
            or expected is None
            or abs(pts - expected) > _RESAMPLE_RESTART_SAMPLES
        ):
            self._new_resampler(pts, frame)
        if self._resampler is None:  # an invariant of this class
            raise RuntimeError("internal: self._resampler not set")
        try:
            out = self._resampler.resample(frame)
        except ValueError:  # format/rate/layout changed mid-stream
            self._new_resampler(pts, frame)
            if self._resampler is None:  # an invariant of this class
                raise RuntimeError("internal: self._resampler not set") from None
            out = self._resampler.resample(frame)
        for o in out:
            raw = np.asarray(o.to_ndarray(), dtype=np.int16).reshape(-1, self._channels)
            if self._channels == 1:  # mono is heard in both ears at its own level
                raw = np.repeat(raw, 2, axis=1)
            samples: Int16Block = np.ascontiguousarray(raw)
            self.push_samples(self._out_next, samples, arrival_samples)
            self._out_next += len(samples)
        del av

    def _new_resampler(self, pts: int, frame: av.AudioFrame) -> None:
        import av

        self._channels = 1 if len(frame.layout.channels) == 1 else 2
        layout = "mono" if self._channels == 1 else "stereo"
        self._resampler = av.AudioResampler(format="s16", layout=layout, rate=SAMPLE_RATE)
        self._out_next = pts
