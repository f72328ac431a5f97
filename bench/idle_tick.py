"""Mixer tick CPU per input by state: talking vs idle (issue 27.2, "silence costs nothing").

Method: one ``Mixer`` (medium jitter buffer) with N inputs, all in one state, ticked
in virtual time (no network, no clock): ``talking`` (a decoded 20 ms frame pushed
every tick, on time), ``dtx`` (talked for 0.4 s, then nothing arrives: a DTX pause,
drained), ``muted`` (its Opus payloads keep arriving on the encoded path, muted) and
``absent`` (never sent anything); and an empty mixer (the fixed cost, subtracted).
``time.process_time()`` around each ``Mixer.tick()`` after 100 warm-up ticks, mean
over ``--ticks``; per input = (mode - empty) / N; ratios are to ``talking``.  Pushing
(what the connectors do on arrival) is outside the measured tick.

    .venv/bin/python bench/idle_tick.py [--n 100] [--ticks 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.mixer import Mixer
from mixer_ext.settings import JitterBufferSize
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.core import s16_frame, tone

T = TICK_SAMPLES
MODES = ("talking", "dtx", "muted", "absent")


@dataclass(frozen=True)
class Codec:  # the two fields of aiortc's RTCRtpCodecParameters the input reads
    name: str = "opus"
    clockRate: int = SAMPLE_RATE


def tick_us(n: int, mode: str, ticks: int) -> float:
    """Mean CPU microseconds of one ``Mixer.tick()`` with ``n`` inputs in ``mode``."""
    opus = encode_tone(440.0, 0.1).payloads
    frames = [s16_frame(tone(440.0, 3000.0, k * T, T), k * T) for k in range(50)]
    mixer = Mixer(JitterBufferSize.MEDIUM)
    inputs = [mixer.add_input(f"p{i}", "TR") for i in range(n)]
    if mode == "muted":
        for i in range(n):
            mixer.set_enabled(f"p{i}", "TR", False)
    cpu = 0.0
    for tick in range(ticks + 100):
        for inp in inputs:
            if mode == "talking" or (mode == "dtx" and tick < 20):
                frame = frames[tick % 50]
                frame.pts = tick * T
                inp.push(frame, tick * 0.020 - 0.005)
            elif mode == "muted":
                inp.push_encoded(Codec(), tick, tick * T, opus[tick % len(opus)], tick * 0.020)
        t0 = time.process_time()
        mixer.tick()
        if tick >= 100:
            cpu += time.process_time() - t0
    return cpu / ticks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="inputs (100)")
    parser.add_argument("--ticks", type=int, default=500, help="measured ticks (500)")
    args = parser.parse_args()
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    base = tick_us(0, "absent", args.ticks)
    print(f"empty mixer: {base:.0f} us per tick")
    figures = {mode: tick_us(args.n, mode, args.ticks) for mode in MODES}
    per = {mode: (v - base) / args.n for mode, v in figures.items()}
    for mode in MODES:
        print(
            f"{mode:>8}: {figures[mode]:7.0f} us per tick, {per[mode]:6.2f} us per input "
            f"({per[mode] / per['talking']:.3f}x talking)"
        )
    print(f"end: {benchlib.load()}")


if __name__ == "__main__":
    main()
