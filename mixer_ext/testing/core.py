"""Helpers for the mixer-core tests: tones, frames and a virtual-time network.

``simulate`` drives a real ``Mixer`` in virtual time: each sender produces
frames on its own (drifting) clock, the network delays them by a base delay
plus uniform jitter and drops some at random, and every frame is pushed into
its ``Input`` with its arrival time, in arrival order, before the tick that
follows its arrival, exactly as the clock runner's readers do in real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from mixer_ext.core.frames import SAMPLE_RATE, MixedFrame
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload

Int16Block = npt.NDArray[np.int16]


def tone(freq: float, amplitude: float, start: int, n: int, rate: int = SAMPLE_RATE) -> Int16Block:
    """``n`` stereo int16 samples of a sine starting at sample ``start``."""
    t = (np.arange(n) + start) / rate
    x = np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return np.stack((x, x), axis=1)


def s16_frame(samples: Int16Block, pts: int, rate: int = SAMPLE_RATE) -> av.AudioFrame:
    """A packed s16 stereo ``av.AudioFrame`` like aiortc's Opus decoder produces."""
    f = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="stereo"
    )
    f.sample_rate = rate
    f.pts = pts
    f.time_base = Fraction(1, rate)
    return f


def max_step(x: npt.NDArray[np.int16]) -> int:
    """Largest sample-to-sample change (either channel): a click shows up here."""
    return int(np.abs(np.diff(x.astype(np.int32), axis=0)).max())


@dataclass
class Sender:
    """One simulated participant's sending side."""

    identity: str
    freq: float
    amplitude: float
    ppm: float = 0.0
    frame: int = 960
    loss: float = 0.0
    jitter_s: float = 0.0
    base_delay_s: float = 0.010
    pts0: int = 0
    #: frames sent so far
    sent: int = 0
    _table: Int16Block = field(init=False)
    _period: int = field(init=False)

    def __post_init__(self) -> None:
        # content repeats every `period` samples, so frames are slices of one table
        period = round(SAMPLE_RATE / self.freq)
        if abs(SAMPLE_RATE / period - self.freq) > 1e-9:
            raise ValueError("freq must divide 48000")
        self._period = period
        self._table = tone(self.freq, self.amplitude, 0, self.frame + period)

    def samples(self, pts: int) -> Int16Block:
        o = pts % self._period
        return self._table[o : o + self.frame]

    def schedule(
        self, until_s: float, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Arrival times (s, mixer clock) and pts of the frames sent before ``until_s``."""
        rate = SAMPLE_RATE * (1 + self.ppm * 1e-6)  # sender samples per mixer second
        last = int(until_s * rate / self.frame)
        k = np.arange(self.sent, max(self.sent, last), dtype=np.int64)
        self.sent = max(self.sent, last)
        send_t = (k * self.frame) / rate
        arrival = send_t + self.base_delay_s + rng.uniform(0, self.jitter_s, len(k))
        keep = rng.random(len(k)) >= self.loss
        return arrival[keep], (k[keep] * self.frame + self.pts0)


def longrun_senders(tick: int) -> list[Sender]:
    """The long-run scenario (tests/core/test_longrun.py, bench/endurance.py): two senders
    drifting +-200 ppm, 5 % loss, 10 ms + 0..40 ms of delay, frames of ``tick`` samples."""
    common = {"frame": tick, "loss": 0.05, "jitter_s": 0.040, "base_delay_s": 0.010}
    return [
        Sender("fast", 1000.0, 8000.0, ppm=+200, pts0=123_456, **common),  # type: ignore[arg-type]
        Sender("slow", 500.0, 12000.0, ppm=-200, pts0=9_000_000, **common),  # type: ignore[arg-type]
    ]


def simulate(
    mixer: Mixer,
    senders: list[Sender],
    seconds: float,
    *,
    seed: int = 1,
    chunk_s: float = 60.0,
    on_tick: Callable[[int, MixedFrame, MetadataPayload | None], None] | None = None,
) -> int:
    """Run ``mixer`` for ``seconds`` of virtual time; returns the samples it output."""
    rng = np.random.default_rng(seed)
    inputs = [mixer.add_input(s.identity, "TR_" + s.identity) for s in senders]
    T = mixer.tick_samples
    tick_s = T / SAMPLE_RATE
    ticks = round(seconds / tick_s)
    total = 0
    pending_t = np.zeros(0)
    pending_pts = np.zeros(0, np.int64)
    pending_who = np.zeros(0, np.int64)
    horizon = 0.0
    n = 0
    slack = max(s.jitter_s + s.base_delay_s for s in senders) + 2 * tick_s
    while n < ticks:
        horizon = min(horizon + chunk_s, seconds + slack + tick_s)
        ts, ps, ws = [pending_t], [pending_pts], [pending_who]
        for i, s in enumerate(senders):
            t, p = s.schedule(horizon, rng)
            ts.append(t)
            ps.append(p)
            ws.append(np.full(len(t), i))
        all_t, all_p, all_w = np.concatenate(ts), np.concatenate(ps), np.concatenate(ws)
        order = np.argsort(all_t, kind="stable")
        all_t, all_p, all_w = all_t[order], all_p[order], all_w[order]
        # frames that may still be overtaken by ones sent after `horizon` stay pending
        safe = horizon - slack
        cut = int(np.searchsorted(all_t, safe))
        pending_t, pending_pts, pending_who = all_t[cut:], all_p[cut:], all_w[cut:]
        tl, pl, wl = all_t[:cut].tolist(), all_p[:cut].tolist(), all_w[:cut].tolist()
        i = 0
        end_tick = min(ticks, int(safe / tick_s))
        while n < end_tick:
            due = n * tick_s
            while i < len(tl) and tl[i] <= due:
                w = wl[i]
                inputs[w].push_samples(pl[i], senders[w].samples(pl[i]), tl[i] * SAMPLE_RATE)
                i += 1
            frame, payload = mixer.tick()
            total += len(frame.samples)
            if on_tick is not None:
                on_tick(n, frame, payload)
            n += 1
        # frames not consumed (arrival after the last tick of this chunk) go back
        pending_t = np.concatenate((np.array(tl[i:]), pending_t))
        pending_pts = np.concatenate((np.array(pl[i:], np.int64), pending_pts))
        pending_who = np.concatenate((np.array(wl[i:], np.int64), pending_who))
    return total
