"""The jitter buffer of one input: 48 kHz stereo s16 samples in, one tick out.

Timing model (why pts *and* arrival):

* ``pts`` (sender sample count at 48 kHz) says *where* a sample belongs: the
  buffer is a ring indexed by pts, so reordering is free and a hole is a
  hole (concealed), never a shift.
* ``arrival`` (samples on the mixer's own timeline: tick ``n`` is pulled at
  ``n * tick_samples``) says *when* it came. ``a = pts - arrival`` is the
  frame's clock offset plus its network delay; the largest ``a`` over the
  last 1-2 s is the offset of the least-delayed frames. The playout point is
  steered so those frames wait ``depth`` (+ one tick of pull quantisation):
  frames delayed up to ``depth`` more than the fastest ones are on time.
  Because ``a`` is measured against a continuous clock, sender drift shows up
  as a slow slope of that estimate and is followed by dropping or inserting
  single samples (at most one per 20 ms, ~1000 ppm, far above the 200 ppm to
  follow); bursts do not move it (a burst only delays frames). An excess
  of more than 10 ms (e.g. the first frame of a talk spurt was a slow one)
  is skipped at once, cross-faded, so latency stays within
  ``latency_bound_samples``.
* No frames for 1-2 s (DTX, mute, pause) forget the estimate; the next frame
  re-anchors the playout point, so silence never turns into latency, whatever
  the sender's pts did across the gap. So does a frame 500 ms off the
  estimate (a pts discontinuity) or five whole frames late in a row (the
  network's delay went up for good).
* Without an arrival time (``arrival=None``) a frame counts as arriving just
  before the next pull: it works, but drift is then seen only in 20 ms steps.

Adaptive depth (``adaptive=True``, ``JitterBufferSize.ADAPTIVE``, issue 27.3).
A fixed depth pays its full size in latency whatever the network does.  The
adaptive buffer also tracks the *smallest* ``a`` of each window: the spread
``max(a) - min(a)`` is the jitter actually seen (network and event-loop delay).
The depth is that spread, remembered over the last ``SPREAD_MEMORY_WINDOWS``
windows, plus ``ADAPTIVE_MARGIN_SAMPLES``, within ``[0, depth_samples]``.  It
starts at ``ADAPTIVE_START_SAMPLES`` (``medium``: the first seconds are as safe
as the old default), grows at once (a frame that would be late makes the
playout point step back before it is judged, so it plays instead of being
dropped: the step is filled by concealment), and shrinks by at most
``ADAPTIVE_SHRINK_SAMPLES`` a tick (4 ms a second).  Lost frames do not grow it:
waiting longer does not bring a lost frame back.

Playout phase (adaptive only).  With the fixed depths the playout point sits a
whole tick below ``est - depth``, because a pull that straddles two frames
needs the later one too.  When the sender's frames are one tick long (20 ms
Opus, the usual case) the adaptive buffer instead puts the pull boundaries on
the sender's frame boundaries (``k = phase (mod tick)``): each pull then needs
one frame, and the playout point is the highest aligned one at or below
``est - depth``: a quantisation of 0-20 ms (10 on average) instead of always 20.
The whole tick is not only waste: a frame later than the depth by less than it
loses only its late part (the pull it straddles takes the rest), where an
aligned pull loses it whole.  So at its bound (the measured jitter fills it)
the adaptive buffer is exactly the fixed depth, whole-tick rule included.
It moves up as soon as a whole tick fits, down only once it is more than
``ALIGN_HYSTERESIS_SAMPLES`` above ``est - depth`` (the depth's margin covers
that), and always by whole ticks, so clock drift is followed by a 20 ms step (cross-faded; skip or
concealment) every ``20 ms / drift`` (100 s at 200 ppm) rather than by single
samples.  Frames of other lengths keep the whole-tick rule.

Loss and late frames: a missing stretch is concealed by the last 20 ms
played back and forth (mirror extension: continuous, no step) under a
linear fade to silence over 60 ms; audio that comes back is cross-faded in
over 2 ms. A frame whose samples are all before the playout point is late:
dropped and counted.

Everything here is synchronous and allocation-bounded: the ring has a fixed
capacity, so memory does not grow however long it runs.

Why one module: the ring, the playout point and its drift/resync rules are
one timing model; most of the length is the documentation of that model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES, Int16Block

#: period of the mirrored concealment and length of the history kept for it
CONCEAL_PERIOD = 960
#: concealment fades to silence over this many samples (60 ms)
CONCEAL_SAMPLES = 2880
#: cross-fade from concealment (or from before a jump) into audio (2 ms)
CROSSFADE_SAMPLES = 96
#: playout error tolerated before a correction starts (2 ms); it stops at half of it
TOLERANCE_SAMPLES = 96
#: too much buffered by more than this (10 ms): skip forward at once instead of slowly
JUMP_AHEAD_SAMPLES = 480
#: too little buffered by more than this (100 ms): step back at once (frames were late)
JUMP_BEHIND_SAMPLES = 4800
#: a frame this far ahead of the estimate is a timestamp discontinuity (500 ms); far
#: behind it is merely late (five in a row re-anchor)
DISCONTINUITY_SAMPLES = 24_000
#: this many whole frames late in a row re-anchor the playout point
LATE_STREAK_RESYNC = 5
#: pts gaps up to this long (or 6 frames) count as lost frames; longer ones are DTX/mute pauses
LOSS_GAP_SAMPLES = 5760
#: the delay estimate is the max over the current and previous window of this length (1 s)
ESTIMATE_WINDOW_SAMPLES = SAMPLE_RATE
#: adaptive depth: where it starts (40 ms, ``medium``) and the margin above the spread (2 ms)
ADAPTIVE_START_SAMPLES = 1920
ADAPTIVE_MARGIN_SAMPLES = 96
#: adaptive depth: at most this much shrink a tick (4 samples = 4 ms a second)
ADAPTIVE_SHRINK_SAMPLES = 4
#: adaptive depth: the spread of this many past windows is remembered (5 s)
SPREAD_MEMORY_WINDOWS = 5
#: adaptive playout phase: an aligned playout point is kept while at most this much above
#: ``est - depth`` (the margin covers it); it moves up as soon as a whole tick fits
ALIGN_HYSTERESIS_SAMPLES = 96


def _stretch(src: Int16Block, delta: int) -> Int16Block:
    """Drop (``delta > 0``) or repeat (``delta < 0``) ``|delta|`` samples, spread evenly.

    A skipped sample only doubles one step of the waveform and a repeated one
    makes one step of zero: no discontinuity either way, and the pitch change
    (at most ~0.1 %) is inaudible.
    """
    n = len(src)
    m = abs(delta)
    cuts = [(i * n) // (m + 1) for i in range(1, m + 1)]
    parts: list[Int16Block] = []
    prev = 0
    for c in cuts:
        if delta > 0:
            parts.append(src[prev:c])
            prev = c + 1
        else:
            parts.append(src[prev : c + 1])
            prev = c
    parts.append(src[prev:])
    return np.concatenate(parts)


def _ring_capacity(tick_samples: int) -> int:
    need = max(16_384, 8 * tick_samples)
    return 1 << (need - 1).bit_length()


class JitterBuffer:
    """Reorders, conceals and paces one 48 kHz stream onto the mixer's ticks.

    Stereo by default; ``set_channels(1)`` before the first push makes it hold mono
    (half the memory traffic), which ``pull(out)`` writes to both channels of a stereo
    ``out``: a mono participant is upmixed only as it enters the mix.

    ``depth_samples``: the jitter the buffer absorbs (``JitterBufferSize``); with
    ``adaptive`` its upper bound, the depth in use being ``current_depth_samples``.
    ``tick_samples``: samples per pull (960; larger only in simulations).
    ``start_tick``: the mixer tick of this buffer's first pull, so that
    arrival times on the mixer timeline line up with its pulls.

    Stats (plain attributes, cumulative): ``frames_received``,
    ``late_frames``, ``early_frames`` (too far ahead to hold: dropped),
    ``lost_frames`` (detected by pts gaps up to 120 ms or 6 frames),
    ``reordered_frames``, ``concealed_ticks``, ``resyncs``,
    ``samples_dropped`` / ``samples_inserted`` (drift correction),
    ``latency_samples`` (buffered ahead of the playout point at the last
    pull) and ``peak_latency_samples`` (its maximum since the last
    ``reset_peak_latency()``); adaptive: ``current_depth_samples``,
    ``spread_samples`` (the jitter it sizes itself to) and ``depth_grown`` (steps back).
    """

    def __init__(
        self,
        depth_samples: int,
        *,
        tick_samples: int = TICK_SAMPLES,
        start_tick: int = 0,
        adaptive: bool = False,
    ) -> None:
        if depth_samples < 0 or tick_samples < 2:
            raise ValueError("depth must be >= 0 and tick_samples >= 2")
        self.depth_samples = depth_samples
        self.adaptive = adaptive
        #: the depth in use: ``depth_samples`` when fixed; measured when adaptive
        self.current_depth_samples = (
            min(depth_samples, ADAPTIVE_START_SAMPLES) if adaptive else depth_samples
        )
        #: adaptive: the jitter (spread of ``pts - arrival``) the depth follows
        self.spread_samples = 0.0
        #: adaptive: times the depth grew and the playout point stepped back for it
        self.depth_grown = 0
        self._min_cur: float | None = None  # smallest a of the current / previous window
        self._min_prev: float | None = None
        self._spreads: list[float] = []  # spread of the last SPREAD_MEMORY_WINDOWS windows
        self._frame_len = 0  # length and pts phase (mod tick) of the last measured frame
        self._phase: int | None = None
        self._aligned: int | None = None  # the aligned playout offset held (adaptive)
        self.tick_samples = tick_samples
        self._cap = _ring_capacity(tick_samples)
        self._mask = self._cap - 1
        self.channels = 2
        self._ring: Int16Block = np.zeros((self._cap, 2), np.int16)
        self._valid = np.zeros(self._cap, np.bool_)
        self._max_step = max(1, tick_samples // TICK_SAMPLES)
        # the estimate spans at least 25 ticks (only matters for simulations with long ticks)
        self._window = max(ESTIMATE_WINDOW_SAMPLES, 25 * tick_samples)
        self._tick = start_tick  # index of the next pull on the mixer timeline
        self._play = 0  # pts of the next sample to play; k = play - tick * tick_samples
        self._anchored = False
        self._newest_end = 0
        self._expected: int | None = None
        self._win_idx = -2
        self._win_cur: float | None = None
        self._win_prev: float | None = None
        self._late_streak = 0
        self._hist: Int16Block = np.zeros((CONCEAL_PERIOD, 2), np.int16)
        self._gap_len = CONCEAL_SAMPLES  # start silent: the first audio fades in
        self._xfade_pending = False
        self._correcting = False
        self.largest_frame = 0
        # stats
        self.frames_received = 0
        self.late_frames = 0
        self.early_frames = 0
        self.lost_frames = 0
        self.reordered_frames = 0
        self.concealed_ticks = 0
        self.resyncs = 0
        self.samples_dropped = 0
        self.samples_inserted = 0
        self.latency_samples = 0
        self.peak_latency_samples = 0

    def set_channels(self, channels: int) -> None:
        """Hold ``channels`` (1 or 2) per sample; only before the first push."""
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        if channels == self.channels:
            return
        if self.frames_received or self._anchored:
            raise RuntimeError("a jitter buffer's channels are set before its first push")
        self.channels = channels
        self._ring = np.zeros((self._cap, channels), np.int16)
        self._hist = np.zeros((CONCEAL_PERIOD, channels), np.int16)

    # ------------------------------------------------------------------ stats
    @property
    def latency_seconds(self) -> float:
        return self.latency_samples / SAMPLE_RATE

    @property
    def latency_bound_samples(self) -> int:
        """Most audio the buffer holds ahead of playout in steady state.

        depth + one tick of pull quantisation + the largest frame + the
        largest excess followed gradually (above it the playout point jumps).
        """
        frame = max(self.largest_frame, self.tick_samples)
        return self.depth_samples + self.tick_samples + frame + JUMP_AHEAD_SAMPLES

    def reset_peak_latency(self) -> None:
        self.peak_latency_samples = 0

    # ------------------------------------------------------------------ estimate
    def _rotate(self) -> None:
        w = (self._tick * self.tick_samples) // self._window
        if w != self._win_idx:
            adjacent = w == self._win_idx + 1
            if self.adaptive:
                if self._win_cur is not None and self._min_cur is not None:
                    self._spreads.append(self._win_cur - self._min_cur)
                    del self._spreads[:-SPREAD_MEMORY_WINDOWS]
                self._min_prev = self._min_cur if adjacent else None
                self._min_cur = None
            self._win_prev = self._win_cur if adjacent else None
            self._win_cur = None
            self._win_idx = w

    def _estimate(self) -> float | None:
        self._rotate()
        cur, prev = self._win_cur, self._win_prev
        if cur is None:
            return prev
        return cur if prev is None or cur > prev else prev

    def _target_play_offset(self, est: float) -> float:
        if not self.adaptive:
            return est - self.depth_samples - self.tick_samples
        T = self.tick_samples
        base = est - self.current_depth_samples
        phase = self._phase
        if (
            phase is None
            or self._frame_len != T
            or self.current_depth_samples >= self.depth_samples
        ):
            # at its bound (the jitter fills it) it is the fixed depth, whole-tick rule and
            # all: a frame a little later than that then loses only its late part
            self._aligned = None
            return base - T
        held = self._aligned
        if (
            held is not None
            and (held - phase) % T == 0
            and base - T < held <= base + ALIGN_HYSTERESIS_SAMPLES
        ):
            return held
        # the highest playout offset at or below est - depth whose pulls start on frame starts
        aligned = phase + T * int((base - phase) // T)
        self._aligned = aligned
        return aligned

    # ------------------------------------------------------------------ adaptive depth
    def _spread(self) -> float:
        """The jitter seen: max - min of ``a`` over the current + previous window and the
        remembered windows (adaptive only)."""
        hi = [v for v in (self._win_cur, self._win_prev) if v is not None]
        lo = [v for v in (self._min_cur, self._min_prev) if v is not None]
        now = max(hi) - min(lo) if hi and lo else 0.0
        return max([now, *self._spreads])

    def _adapt(self, per_tick: bool) -> bool:
        """Size the depth to the spread: grow at once, shrink a little per tick (``per_tick``).

        Returns True when it grew.
        """
        self._rotate()
        spread = self._spread()
        self.spread_samples = spread
        want = min(self.depth_samples, max(0, round(spread) + ADAPTIVE_MARGIN_SAMPLES))
        depth = self.current_depth_samples
        if want > depth:
            self.current_depth_samples = want
            self.depth_grown += 1
            return True
        if per_tick and want < depth:
            self.current_depth_samples = max(want, depth - ADAPTIVE_SHRINK_SAMPLES)
        return False

    def _step_back_for(self, est: float) -> None:
        """Adaptive: move the playout point back at once if the target is now behind it."""
        k = self._play - self._tick * self.tick_samples
        err = self._target_play_offset(est) - k
        if err < -TOLERANCE_SAMPLES:
            self._jump(round(err))
            self._correcting = False

    def _jump(self, delta: int) -> None:
        """Move the playout point by ``delta`` samples at once (cross-faded)."""
        if delta == 0:
            return
        if delta >= self._cap or -delta > self._cap // 2:
            self._valid[:] = False  # nothing buffered can stay in place
        elif delta > 0:
            self._clear(self._play, delta)
        else:  # stepping back: new frames may land where the history view points
            self._hist = self._hist.copy()
        self._play += delta
        self._xfade_pending = True
        self.resyncs += 1

    def _resync(self, a: float) -> None:
        self._win_cur, self._win_prev = a, None
        self._min_cur, self._min_prev = a, None
        self._late_streak = 0
        target = round(self._target_play_offset(a)) + self._tick * self.tick_samples
        self._valid[:] = False  # a new timeline: nothing buffered belongs to it
        if not self._anchored:
            self._play = target
            self._anchored = True
        else:
            self._jump(target - self._play)
        self._newest_end = self._play

    # ------------------------------------------------------------------ ring
    def _clear(self, start: int, n: int) -> None:
        i = start & self._mask
        if i + n <= self._cap:
            self._valid[i : i + n] = False
        else:
            self._valid[i:] = False
            self._valid[: i + n - self._cap] = False

    def _write(self, start: int, samples: Int16Block) -> None:
        n = len(samples)
        i = start & self._mask
        if i + n <= self._cap:
            self._ring[i : i + n] = samples
            self._valid[i : i + n] = True
        else:
            k = self._cap - i
            self._ring[i:] = samples[:k]
            self._ring[: n - k] = samples[k:]
            self._valid[i:] = True
            self._valid[: n - k] = True

    def _take(self, start: int, n: int) -> tuple[Int16Block, npt.NDArray[np.bool_] | None]:
        """Copy out ``n`` samples from ``start`` and free them; validity None = all valid."""
        i = start & self._mask
        if i + n <= self._cap:
            seg = self._ring[i : i + n].copy()
            view = self._valid[i : i + n]
            valid = None if view.all() else view.copy()
            view[:] = False
        else:
            k = self._cap - i
            seg = np.concatenate((self._ring[i:], self._ring[: n - k]))
            valid = np.concatenate((self._valid[i:], self._valid[: n - k]))
            self._valid[i:] = False
            self._valid[: n - k] = False
        return seg, valid

    # ------------------------------------------------------------------ push
    def push_samples(
        self,
        pts: int,
        samples: Int16Block,
        arrival: float | None = None,
        *,
        measured: bool = True,
    ) -> None:
        """Store ``samples`` (int16, shape (n, channels), 48 kHz) whose first sample is ``pts``.

        ``arrival``: when it arrived, in samples on the mixer timeline (tick
        ``n`` is pulled at ``n * tick_samples``); ``None`` means "just now",
        i.e. before the next pull (coarser: drift is then seen only in steps).
        ``measured`` False: made up here (the decoder's concealment), not received:
        it says nothing about the network, so the adaptive depth ignores it.
        """
        n = len(samples)
        if n == 0:
            return
        ch = self.channels
        if samples.ndim != 2 or samples.shape[1] != ch or samples.dtype != np.int16:
            raise ValueError(
                f"samples must be int16 (n, {ch}), got {samples.dtype} {samples.shape}"
            )
        self.frames_received += 1
        self.largest_frame = max(self.largest_frame, n)
        if arrival is None:
            arrival = float(self._tick * self.tick_samples)
        if measured and self.adaptive:
            self._frame_len = n
            self._phase = pts % self.tick_samples
        a = pts - arrival
        est = self._estimate()
        if (
            est is None
            or a - est > DISCONTINUITY_SAMPLES
            or self._late_streak >= LATE_STREAK_RESYNC
        ):
            self._resync(a)
            self._expected = None
        elif measured or not self.adaptive:
            if self._win_cur is None or a > self._win_cur:
                self._win_cur = a
            if self.adaptive:
                if self._min_cur is None or a < self._min_cur:
                    self._min_cur = a
                if pts < self._play and self._adapt(False):
                    # (partly) late: the depth grows now and the playout point steps
                    # back before the frame is judged, so it still plays
                    est = self._estimate()
                    self._step_back_for(a if est is None else est)

        end = pts + n
        expected = self._expected
        if expected is not None and expected < pts <= expected + max(LOSS_GAP_SAMPLES, 6 * n):
            self.lost_frames += max(1, round((pts - expected) / n))
        if end <= self._play:
            self.late_frames += 1
            self._late_streak += 1
            return
        self._late_streak = 0
        if expected is not None and end <= expected:
            self.reordered_frames += 1
            self.lost_frames = max(0, self.lost_frames - 1)
        if pts < self._play:
            samples = samples[self._play - pts :]
            pts = self._play
        # never write where the last played samples (the concealment history) sit in the ring
        limit = self._play + self._cap - CONCEAL_PERIOD
        if pts >= limit:  # too early to hold: the estimate has moved, the next pull catches up
            self.early_frames += 1
            return
        if end > limit:
            samples = samples[: limit - pts]
            end = limit
        self._write(pts, samples)
        if end > self._newest_end:
            self._newest_end = end
        if expected is None or end > expected:
            self._expected = end

    # ------------------------------------------------------------------ pull
    @property
    def idle(self) -> bool:
        """Nothing to play this tick, whatever is pulled: O(1) (issue 27.2).

        True before the first frame, and once everything buffered has played and its
        concealment has faded to silence (a DTX pause, a muted or absent sender, a
        drained buffer).  Then ``skip()`` stands for ``pull()``: the next pull would
        give silence.
        """
        return not self._anchored or (
            self._newest_end <= self._play
            and self._gap_len >= CONCEAL_SAMPLES
            and not self._xfade_pending
        )

    def skip(self) -> None:
        """Advance one tick without output, for an ``idle`` buffer (no copy, no concealment).

        The playout point moves on with the tick; drift correction waits for the next
        audio (``pull()`` then corrects whatever the estimate says).
        """
        if self._anchored:
            self._play += self.tick_samples
        self._tick += 1
        self.latency_samples = 0

    def _correction(self) -> int:
        """Samples to consume beyond one tick now: >0 drops, <0 inserts."""
        est = self._estimate()
        if est is None or not self._anchored:
            return 0
        behind = JUMP_BEHIND_SAMPLES
        if self.adaptive:
            self._adapt(True)
            behind = 2 * TOLERANCE_SAMPLES  # a deeper buffer is wanted now, not in seconds
        k = self._play - self._tick * self.tick_samples
        err = self._target_play_offset(est) - k
        if err > JUMP_AHEAD_SAMPLES or err < -behind:
            self._jump(round(err))
            self._correcting = False
            return 0
        if abs(err) > TOLERANCE_SAMPLES:
            self._correcting = True
        elif abs(err) < TOLERANCE_SAMPLES // 2:
            self._correcting = False
        if not self._correcting:
            return 0
        step = min(self._max_step, int(abs(err)))
        return step if err > 0 else -step

    def pull(self, out: Int16Block | None = None) -> Int16Block:
        """Exactly ``tick_samples`` samples (int16, (n, channels)) for the next tick.

        With ``out`` (int16, (tick_samples, 2)) the samples are written there (a mono
        buffer's to both channels) and ``out`` is returned (the mixer pulls straight
        into its stack).
        """
        T = self.tick_samples
        if not self._anchored:
            self._tick += 1
            self.latency_samples = 0
            if out is None:
                return np.zeros((T, self.channels), np.int16)
            out[...] = 0
            return out
        delta = self._correction()
        ahead = self._newest_end - self._play
        self.latency_samples = ahead if ahead > 0 else 0
        if self.latency_samples > self.peak_latency_samples:
            self.peak_latency_samples = self.latency_samples
        n = T + delta
        i = self._play & self._mask
        if delta == 0 and self._gap_len == 0 and not self._xfade_pending and i + n <= self._cap:
            view = self._valid[i : i + n]
            if view.all():  # the common case: audio, no correction, no wrap
                view[:] = False
                src = self._ring[i : i + n]
                # a view is safe: push never writes within CONCEAL_PERIOD behind the playout point
                self._hist = src[-CONCEAL_PERIOD:]
                self._play += n
                self._tick += 1
                if out is None:
                    return src.copy()
                out[...] = src
                return out
        seg, valid = self._take(self._play, n)
        self._play += n
        self._tick += 1
        src = self._conceal(seg, valid)
        if delta > 0:
            self.samples_dropped += delta
            src = _stretch(src, delta)
        elif delta < 0:
            self.samples_inserted -= delta
            src = _stretch(src, delta)
        if out is None:
            return src
        out[...] = src
        return out

    def _conceal(self, seg: Int16Block, valid: npt.NDArray[np.bool_] | None) -> Int16Block:
        H = CONCEAL_PERIOD
        if self._gap_len == 0 and not self._xfade_pending and (valid is None or valid.all()):
            self._hist = seg[-H:] if len(seg) >= H else np.concatenate((self._hist, seg))[-H:]
            return seg
        if (
            self._gap_len >= CONCEAL_SAMPLES
            and not self._xfade_pending
            and valid is not None
            and not valid.any()
        ):
            # already faded out and still nothing: silence, no mirror to compute (what the
            # general path gives: zeros, the history and the fade state unchanged)
            seg[...] = 0
            return seg
        y = np.concatenate((self._hist, seg))  # int16; only the gaps are computed in float
        total = len(y)
        missing = np.zeros(len(seg), np.bool_) if valid is None else ~valid
        edges = np.diff(np.concatenate(([0], missing.view(np.int8), [0])))
        starts = np.flatnonzero(edges == 1).tolist()
        ends = np.flatnonzero(edges == -1).tolist()
        runs = list(zip(starts, ends, strict=True))
        if self._xfade_pending and (not runs or runs[0][0] != 0):
            runs.insert(0, (0, 0))  # a jump: cross-fade out of what played before
        self._xfade_pending = False
        concealed = False
        last_gap_start = -1
        gap_len = 0
        for s, e in runs:
            g, r = H + s, H + e
            i0 = self._gap_len if s == 0 else 0
            xf = min(CROSSFADE_SAMPLES, total - r)
            length = (r - g) + xf
            cont = np.zeros((length, self.channels), np.float32)
            live = max(0, min(length, CONCEAL_SAMPLES - i0))
            if live:
                i = i0 + np.arange(live)
                j = i % (2 * H)
                src = np.where(j < H, g - 1 - j, g - 2 * H + j)
                gain = (1.0 - i / CONCEAL_SAMPLES).astype(np.float32)
                cont[:live] = y[src] * gain[:, None]
                if min(live, r - g) > 0:
                    concealed = True
            # |gain| <= 1 and the cross-fade is convex: the results stay in int16 range
            y[g:r] = np.rint(cont[: r - g])
            if xf > 0:
                w = (np.arange(1, xf + 1, dtype=np.float32) / (xf + 1))[:, None]
                y[r : r + xf] = np.rint(cont[r - g :] * (1 - w) + y[r : r + xf] * w)
            if r == total:
                last_gap_start = g
                gap_len = min(i0 + (r - g), CONCEAL_SAMPLES)
        if concealed:
            self.concealed_ticks += 1
        if last_gap_start >= 0:
            self._gap_len = gap_len
            self._hist = y[last_gap_start - H : last_gap_start]
        else:
            self._gap_len = 0
            self._hist = y[-H:]
        return y[H:]
