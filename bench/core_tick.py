"""CPU time of the mixer core per 20 ms tick, for 10, 50 and 250 inputs.

Method: a ``Mixer`` (medium jitter buffer) with N participants of one track
each.  Every tick each input gets one decoded 20 ms frame (packed s16 stereo
48 kHz ``av.AudioFrame``, what aiortc's Opus decoder hands out) through
``Input.push`` with its arrival time, then ``Mixer.tick()`` runs: pull N
inputs, meter them, sum, limit, and every 25th tick build the payload.
``time.process_time()`` is read around the push phase and around the tick
(frame construction, which the decoder does in production, is outside both).
After a 2 s warm-up, the figure is the total over ``--ticks`` ticks divided
by the tick count; the run is repeated ``--repeats`` times and the median is
printed.  Two network conditions: ``steady`` (every frame on time) and
``lossy`` (5 % loss, 0..40 ms jitter, so concealment and reordering run).
The budget is 20 ms of one core per tick.

    .venv/bin/python bench/core_tick.py            # full run (~1 min)
    .venv/bin/python bench/core_tick.py --quick    # smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.mixer import Mixer
from mixer_ext.settings import JitterBufferSize

T = TICK_SAMPLES


def make_frames(n_inputs: int) -> list[np.ndarray]:
    """One second of a distinct tone per input (content repeats every 50 ticks)."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    out = []
    for i in range(n_inputs):
        x = np.rint(3000 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.int16)
        out.append(np.ascontiguousarray(np.stack((x, x), axis=1)))
    return out


def av_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
    f.sample_rate = SAMPLE_RATE
    f.pts = pts
    f.time_base = Fraction(1, SAMPLE_RATE)
    return f


def run_once(n_inputs: int, ticks: int, lossy: bool, seed: int) -> tuple[float, float]:
    """(push seconds, tick seconds) of CPU per tick over ``ticks`` measured ticks."""
    rng = np.random.default_rng(seed)
    mixer = Mixer(JitterBufferSize.MEDIUM, exclude_identity="audio-mixer-v1")
    inputs = [mixer.add_input(f"p{i}", f"TR_{i}") for i in range(n_inputs)]
    tones = make_frames(n_inputs)
    warmup = 100
    push_cpu = tick_cpu = 0.0
    # frames sent at k * 20 ms; delayed by 5 ms (+ 0..40 ms and lost 5 % when lossy)
    pending: list[tuple[float, int, int]] = []
    for n in range(warmup + ticks):
        for i in range(n_inputs):
            if lossy and rng.random() < 0.05:
                continue
            delay = 0.005 + (rng.uniform(0, 0.040) if lossy else 0.0)
            pending.append((n * 0.020 + delay, i, n))
        pending.sort()
        due = n * 0.020
        batch = []
        while pending and pending[0][0] <= due:
            arrival, i, k = pending.pop(0)
            o = (k * T) % SAMPLE_RATE
            batch.append((inputs[i], av_frame(tones[i][o : o + T], k * T), arrival))
        c0 = time.process_time()
        for inp, frame, arrival in batch:
            inp.push(frame, arrival)
        c1 = time.process_time()
        mixer.tick()
        c2 = time.process_time()
        if n >= warmup:
            push_cpu += c1 - c0
            tick_cpu += c2 - c1
    return push_cpu / ticks, tick_cpu / ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--ticks", type=int, default=None, help="measured ticks per repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    ticks = args.ticks or (50 if args.quick else 500)
    repeats = args.repeats or (1 if args.quick else 5)
    sizes = (10, 50) if args.quick else (10, 50, 250)
    print(f"machine: {benchlib.machine()}; {benchlib.load()}")
    print(
        f"method: time.process_time() around Input.push and Mixer.tick, {ticks} ticks "
        f"after a 100-tick warm-up, median of {repeats} repeats; budget 20 ms/tick"
    )
    head = ("inputs", "network", "push/tick", "tick/tick", "total", "of budget")
    print("{:>6} {:>8} {:>10} {:>10} {:>10} {:>9}".format(*head))
    for n in sizes:
        for lossy in (False, True):
            runs = [run_once(n, ticks, lossy, seed=r) for r in range(repeats)]
            push = statistics.median(r[0] for r in runs)
            tick = statistics.median(r[1] for r in runs)
            total = statistics.median(r[0] + r[1] for r in runs)
            print(
                f"{n:>6} {'lossy' if lossy else 'steady':>8} {push * 1e3:>8.3f}ms "
                f"{tick * 1e3:>8.3f}ms {total * 1e3:>8.3f}ms {total / 0.020:>8.1%}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
