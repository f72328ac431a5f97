"""The adaptive jitter buffer (issue 27.3), in virtual time: depth, lateness and delay.

Every trace is fed to today's fixed ``medium`` buffer and to ``adaptive`` alike: frames
of 20 ms sent on the mixer's clock, delayed by a base delay (not a whole number of
ticks) plus random jitter, some lost, pushed in arrival order before the pull that
follows their arrival, exactly as the clock runner does.  Each frame holds a constant
marker value, so where it lands in the output (the delay it was given) is read from
the audio itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.input import Input
from mixer_ext.settings import JitterBufferSize
from mixer_ext.sim.preencoded import encode_tone

T = TICK_SAMPLES
MS = SAMPLE_RATE // 1000
MEDIUM, ADAPTIVE = JitterBufferSize.MEDIUM, JitterBufferSize.ADAPTIVE


@dataclass(frozen=True)
class Codec:  # the two fields of aiortc's RTCRtpCodecParameters the input reads
    name: str = "opus"
    clockRate: int = SAMPLE_RATE


OPUS = Codec()

#: (pts, arrival in samples on the mixer timeline, or None: lost)
Trace = list[tuple[int, float | None]]


def trace(
    seconds: float,
    jitter_ms: float | list[float],
    *,
    loss: float = 0.0,
    base_ms: float = 17.3,
    seed: int = 1,
) -> Trace:
    """Frames sent every 20 ms; ``jitter_ms`` per second (a list) or for all of it."""
    rng = np.random.default_rng(seed)
    out: Trace = []
    for k in range(int(seconds * 50)):
        j = (
            jitter_ms[min(k // 50, len(jitter_ms) - 1)]
            if isinstance(jitter_ms, list)
            else jitter_ms
        )
        arrival = k * T + (base_ms + rng.uniform(0.0, j)) * MS
        out.append((k * T, None if rng.random() < loss else arrival))
    return out


def spiky(seconds: float, *, spike_ms: float, every: int, seed: int = 2) -> Trace:
    """Mostly 0-2 ms of jitter, one frame in ``every`` delayed by ``spike_ms`` more."""
    rng = np.random.default_rng(seed)
    out: Trace = []
    for k in range(int(seconds * 50)):
        extra = spike_ms if rng.integers(every) == 0 else 0.0
        out.append((k * T, k * T + (12.1 + rng.uniform(0, 2) + extra) * MS))
    return out


def stalls(seconds: float, *, stall_ms: float, every_s: float, jitter_ms: float) -> Trace:
    """A loaded machine: 0-``jitter_ms`` of jitter, and every ``every_s`` the event loop
    stalls ``stall_ms``: what arrives meanwhile is stamped at its end, in a burst."""
    rng = np.random.default_rng(5)
    out: Trace = []
    for k in range(int(seconds * 50)):
        t = k * 20 + 12.1 + rng.uniform(0, jitter_ms)
        into = t % (every_s * 1000)
        if into < stall_ms:
            t += stall_ms - into + rng.uniform(0, 1)
        out.append((k * T, t * MS))
    return out


def marker(k: int) -> int:
    return 1000 + k % 30000


def run(size: JitterBufferSize, frames: Trace) -> tuple[Input, np.ndarray, dict[int, int]]:
    """Push and pull a whole trace; returns the input, the output and where each frame
    landed (frame index -> output sample of its first sample)."""
    inp = Input(size)
    arriving = sorted(((arr, pts) for pts, arr in frames if arr is not None), key=lambda x: x[0])
    ticks = int(max(a for a, _ in arriving) // T) + 10
    out = np.zeros((ticks * T, 2), np.int16)
    i = 0
    for n in range(ticks):
        while i < len(arriving) and arriving[i][0] <= n * T:
            arr, pts = arriving[i]
            block = np.full((T, 2), marker(pts // T), np.int16)
            inp.push_samples(pts, block, arr)
            i += 1
        out[n * T : (n + 1) * T] = inp.pull()
    # a frame played whole shows as a run of its marker value: its first sample
    v = out[:, 0].astype(np.int32)
    starts = np.flatnonzero(np.diff(np.concatenate(([-1], v))) != 0)
    landed: dict[int, int] = {}
    for s in starts.tolist():
        if v[s] >= 1000 and s + 400 < len(v) and (v[s : s + 400] == v[s]).all():
            landed.setdefault(int(v[s]) - 1000, s)
    return inp, out, landed


def added_delay_ms(frames: Trace, landed: dict[int, int], after_s: float) -> float:
    """Median of (where a frame's first sample plays - its arrival), from ``after_s`` on."""
    delays = [
        (landed[k] - arr) / MS
        for k, (_, arr) in enumerate(frames)
        if arr is not None and k in landed and arr >= after_s * SAMPLE_RATE
    ]
    assert len(delays) > 50, f"only {len(delays)} frames found whole in the output"
    return float(np.median(delays))


@pytest.mark.parametrize("jitter_ms", [1.0, 8.0, 20.0, 34.0])
def test_the_adaptive_depth_follows_the_measured_spread(jitter_ms: float) -> None:
    inp, _, _ = run(ADAPTIVE, trace(20, jitter_ms))
    depth_ms = inp.current_depth_samples / MS
    # the spread of uniform jitter over seconds of frames is nearly all of it; +2 ms margin
    assert jitter_ms - 1.0 <= depth_ms <= jitter_ms + 3.0, (jitter_ms, depth_ms)
    assert inp.late_frames == 0


@pytest.mark.parametrize(
    "name, frames",
    [
        ("uniform 0-30 ms, 3 % loss", trace(60, 30.0, loss=0.03)),
        ("uniform 0-10 ms, 10 % loss", trace(60, 10.0, loss=0.10, seed=3)),
        ("1 frame in 40 delayed 30 ms", spiky(60, spike_ms=30.0, every=40)),
        ("1 frame in 100 delayed 35 ms", spiky(60, spike_ms=35.0, every=100, seed=4)),
        # the jitter fills the bound: exactly the fixed depth (an aligned pull would lose
        # whole frames that the fixed depth's straddling pull loses only in part)
        ("loop stalls 50 ms every 2 s", stalls(60, stall_ms=50, every_s=2, jitter_ms=10)),
        ("loop stalls 100 ms every 3 s", stalls(60, stall_ms=100, every_s=3, jitter_ms=3)),
        # the jitter fits below it
        ("loop stalls 30 ms every 1 s", stalls(60, stall_ms=30, every_s=1, jitter_ms=3)),
    ],
)
def test_adaptive_never_underruns_more_than_the_fixed_depth_on_the_same_trace(
    name: str, frames: Trace
) -> None:
    fixed, _, _ = run(MEDIUM, frames)
    adaptive, _, _ = run(ADAPTIVE, frames)
    assert adaptive.late_frames <= fixed.late_frames, name
    assert adaptive.concealed_ticks <= fixed.concealed_ticks, name
    assert adaptive.lost_frames == fixed.lost_frames, name


def test_a_jitter_step_grows_the_depth_at_once_and_the_late_frames_still_play() -> None:
    # 20 s clean (the depth shrinks to a few ms), then 0-30 ms of jitter
    frames = trace(40, [0.5] * 20 + [30.0] * 20)
    inp, _, landed = run(ADAPTIVE, frames)
    assert inp.depth_grown >= 1
    assert inp.current_depth_samples >= 29 * MS
    assert inp.late_frames == 0  # the frames that came late at the step were played
    played = sum(1 for k in range(len(frames)) if k in landed)
    assert played >= len(frames) - 10


def test_the_added_delay_drops_on_a_clean_trace() -> None:
    frames = trace(30, 0.5)
    fixed, _, fixed_landed = run(MEDIUM, frames)
    adaptive, _, landed = run(ADAPTIVE, frames)
    before = added_delay_ms(frames, fixed_landed, after_s=15)
    after = added_delay_ms(frames, landed, after_s=15)
    # fixed: its 40 ms plus a whole tick; adaptive: the spread + 2 ms, aligned to frames
    assert before >= 58.0, before
    assert after <= 25.0, (before, after)
    assert adaptive.current_depth_samples <= 4 * MS
    assert adaptive.late_frames == fixed.late_frames == 0
    assert adaptive.concealed_ticks <= fixed.concealed_ticks


def test_frames_the_decoder_made_up_do_not_count_as_jitter() -> None:
    # real Opus payloads, one lost in 10: libopus conceals it (PLC) when the next arrives,
    # stamped with that one's arrival, i.e. 20 ms "late" for its pts; it says nothing
    # about the network, so the depth must not grow for it
    payloads = encode_tone(440.0, 0.3).payloads
    inp = Input(ADAPTIVE)
    for n in range(500):
        if n % 10 != 5:
            inp.push_encoded(OPUS, 1000 + n, 5000 + n * T, payloads[n % len(payloads)], n * 0.020)
        inp.decode_pending()
        inp.pull()
    assert inp.plc_frames >= 40
    assert inp.spread_samples < 2 * MS
    assert inp.current_depth_samples <= 4 * MS
