"""Opus decode cost per 20 ms frame: FFmpeg's native decoder vs libopus, mono vs stereo.

Method: one tone (and the DTX frame libopus emits for silence) is encoded once
by mixer_ext.sim.preencoded; each decoder decodes the same packets in one
thread, timed by process CPU time; the median of 5 runs of --frames frames is
reported in microseconds per frame, with what 100 inputs would cost per tick.
Also: whether a malformed payload raises (so a receive path can drop and count it).

    .venv/bin/python bench/opus_decode.py --frames 1000
"""

from __future__ import annotations

import argparse
import statistics
import time

import av
import benchlib

from mixer_ext.sim.preencoded import encode_tone


def _cost(name: str, layout: str, payloads: list[bytes], frames: int) -> float:
    runs = []
    for _ in range(5):
        dec = av.CodecContext.create(name, "r")
        dec.sample_rate = 48_000
        dec.layout = layout
        t = time.process_time()
        for i in range(frames):
            pkt = av.Packet(payloads[i % len(payloads)])
            pkt.pts = i * 960
            dec.decode(pkt)
        runs.append((time.process_time() - t) / frames * 1e6)
    return statistics.median(runs)


def _garbage(name: str) -> str:
    dec = av.CodecContext.create(name, "r")
    dec.sample_rate = 48_000
    dec.layout = "stereo"
    try:
        dec.decode(av.Packet(b"\xff\xff\xff\xff"))
    except av.FFmpegError as exc:
        return f"raises {type(exc).__name__}"
    return "decodes without error"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    args = ap.parse_args()
    print(benchlib.machine())
    print(benchlib.load())
    print(" ".join(__doc__.split("\n\n")[1].split()))
    for channels in (1, 2):
        loop = encode_tone(440, 0.3, channels=channels)
        sender = "mono" if channels == 1 else "stereo"
        for name in ("opus", "libopus"):
            for layout in ("mono", "stereo"):
                us = _cost(name, layout, loop.payloads, args.frames)
                dtx = _cost(name, layout, [loop.silence], args.frames)
                print(
                    f"{sender:>6} sender  {name:>8} -> {layout:<6} {us:6.1f} us/frame "
                    f"(100 inputs: {us * 100 / 1000:4.2f} ms per 20 ms tick)  "
                    f"DTX frame {dtx:5.1f} us"
                )
    for name in ("opus", "libopus"):
        print(f"malformed payload, {name}: {_garbage(name)}")


if __name__ == "__main__":
    main()
