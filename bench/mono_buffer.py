"""Mono senders buffered mono (upmixed as they enter the mix) vs buffered stereo, side by side.

Method: a ``Mixer`` (medium jitter buffer) with N inputs, each fed the encoded path
(``Input.push_encoded``) one real 20 ms mono Opus payload per tick (a distinct tone
each, ``encode_tone``), stamped with its arrival; ``time.process_time()`` around
``Mixer.tick()`` (decode, jitter buffers, meters, sum, limiter) over ``--ticks`` ticks
after a 50-tick warm-up, the median of ``--repeats`` runs.  ``stereo`` is the same with
``JitterBuffer.set_channels`` disabled, i.e. what the code did before issue 13.1's
"upmix only at the mix": every mono frame duplicated into a stereo buffer.

    .venv/bin/python bench/mono_buffer.py [--inputs 50] [--ticks 300] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.jitter import JitterBuffer
from mixer_ext.core.mixer import Mixer
from mixer_ext.settings import JitterBufferSize
from mixer_ext.sim.preencoded import encode_tone

WARMUP = 50


@dataclass(frozen=True)
class Codec:  # what the input reads of aiortc's RTCRtpCodecParameters
    name: str = "opus"
    clockRate: int = SAMPLE_RATE


def tick_ms(inputs: int, ticks: int, *, mono_buffers: bool) -> float:
    original = JitterBuffer.set_channels
    if not mono_buffers:
        JitterBuffer.set_channels = lambda self, channels: None  # type: ignore[method-assign]
    try:
        mixer = Mixer(JitterBufferSize.MEDIUM)
        loops = [encode_tone(200.0 + 10.0 * i, 0.3, channels=1) for i in range(inputs)]
        ins = [mixer.add_input(f"p{i}", "MT1") for i in range(inputs)]
        spent = 0.0
        for k in range(WARMUP + ticks):
            for loop, inp in zip(loops, ins, strict=True):
                payload = loop.payloads[k % len(loop.payloads)]
                inp.push_encoded(Codec(), 1000 + k, TICK_SAMPLES * k, payload, k * 0.02)
            t0 = time.process_time()
            mixer.tick()
            if k >= WARMUP:
                spent += time.process_time() - t0
        assert all(inp.channels == (1 if mono_buffers else 2) for inp in ins)
        return 1e3 * spent / ticks
    finally:
        JitterBuffer.set_channels = original  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 inputs, 60 ticks, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.inputs, args.ticks, args.repeats = 10, 60, 1
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    print(
        f"method: Mixer.tick() CPU (process_time) with {args.inputs} mono Opus inputs on the"
        f" encoded path, {args.ticks} ticks after {WARMUP}, median of {args.repeats};"
        " buffered stereo (set_channels disabled) vs buffered mono"
    )
    rows = {}
    for mono in (False, True):
        runs = [tick_ms(args.inputs, args.ticks, mono_buffers=mono) for _ in range(args.repeats)]
        rows[mono] = statistics.median(runs)
    stereo, mono = rows[False], rows[True]
    print(f"{args.inputs} mono inputs, CPU per tick (median of {args.repeats}):")
    print(f"  buffered stereo (upmixed on the way in): {stereo:.3f} ms")
    print(f"  buffered mono (upmixed in the mix):      {mono:.3f} ms  ({mono / stereo:.2f}x)")
    print(f"end: {benchlib.load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
