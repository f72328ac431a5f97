"""Endurance: 24 h of the mixer core in virtual time, and a real 10-minute run.

Method.

* Virtual 24 h: the scenario of ``tests/core/test_longrun.py``
  (``mixer_ext.testing.core.longrun_senders``: two senders drifting +200/-200 ppm,
  5 % loss, 10 ms + 0..40 ms of delay, default ``medium`` jitter buffer)
  driven by ``mixer_ext.testing.core.simulate`` with 200 ms ticks and frames (the
  buffer's constants are in samples and scale with the tick; the test runs
  the real 20 ms tick for 20 min).  Printed for the first and the last
  virtual hour: each input's buffered latency (mean and max of the value at
  every metadata window), and this process's RSS and live Python objects at
  1 h and at 24 h (after ``gc.collect()``).
* Real run (default 600 s): ``mixer-ext room-server``, three
  ``mixer-ext talker --tone`` processes and ``mixer-ext run`` (one HLS
  output, ``MIXER_METRICS_PORT``).  The worker's RSS (``/proc/<pid>/statm``,
  with its RTMP child's, if any) and its ``/metrics`` are read every 10 s; the
  first and the last minute are compared: buffered latency
  (``mixer_input_buffered_latency_seconds``, mean and p50 of that minute's
  observations), tick lateness p99, RSS at the
  window's end, and the late/concealed/lost counters over the whole run.
  ``--all-outputs``: the worker writes every output kind at once (event HLS,
  ``.ts`` and ``.m4a`` recordings, RTMP to ``ffmpeg -listen 1``), the issue-16
  memory check; RSS is printed about every 10 minutes of a long run.

    .venv/bin/python bench/endurance.py [--real-seconds 600]
    .venv/bin/python bench/endurance.py --skip-virtual --all-outputs --real-seconds 3600
    .venv/bin/python bench/endurance.py --quick     # 1 virtual hour, 10 s real
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import (
    Histogram,
    Scrape,
    free_port,
    rss_bytes,
    scrape,
    stop_process,
    tree_rss_bytes,
)

from mixer_ext.core.frames import SAMPLE_RATE, MixedFrame
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.settings import JitterBufferSize
from mixer_ext.testing.core import longrun_senders, simulate

SECRET = "bench-secret-not-for-production-0123456789"
MIB = 1024 * 1024


def virtual(hours: float) -> None:
    tick = 9600
    seconds = hours * 3600
    mixer = Mixer(JitterBufferSize.MEDIUM, exclude_identity="audio-mixer-v1", tick_samples=tick)
    senders = longrun_senders(tick)
    ticks = round(seconds * SAMPLE_RATE / tick)
    hour_ticks = ticks // round(hours) if hours >= 1 else ticks
    first: dict[str, list[float]] = {s.identity: [] for s in senders}
    last: dict[str, list[float]] = {s.identity: [] for s in senders}
    memory: dict[str, tuple[int, int]] = {}

    def on_tick(n: int, frame: MixedFrame, payload: MetadataPayload | None) -> None:
        if payload is not None:
            for st in mixer.input_stats():
                if n < hour_ticks:
                    first[st.identity].append(st.input.latency_seconds)
                if n >= ticks - hour_ticks:
                    last[st.identity].append(st.input.latency_seconds)
        if n == hour_ticks - 1:
            gc.collect()
            memory["1 h"] = (rss_bytes(os.getpid()), len(gc.get_objects()))

    t0 = time.monotonic()
    simulate(mixer, senders, seconds, on_tick=on_tick)
    wall = time.monotonic() - t0
    gc.collect()
    memory[f"{hours:g} h"] = (rss_bytes(os.getpid()), len(gc.get_objects()))
    print(
        f"virtual {hours:g} h in {wall:.1f} s of wall time (200 ms ticks and frames: latencies "
        "below are at that tick, whose bound is 450 ms; at the real 20 ms tick it is 90 ms)"
    )
    for st in mixer.input_stats():
        f, la = first[st.identity], last[st.identity]
        inp = st.input
        print(
            f"  input {st.identity:>4}: buffered latency first hour mean {_ms(f)} max "
            f"{max(f) * 1e3:.1f} ms; last hour mean {_ms(la)} max {max(la) * 1e3:.1f} ms; "
            f"bound {inp.latency_bound_samples / SAMPLE_RATE * 1e3:.0f} ms;\n"
            f"              late {inp.late_frames}, lost {inp.lost_frames}, net drift correction "
            f"{inp.samples_dropped - inp.samples_inserted:+d} samples"
        )
    (r0, o0), (r1, o1) = memory["1 h"], memory[f"{hours:g} h"]
    print(
        f"  RSS at 1 h {r0 / MIB:.1f} MiB, at {hours:g} h {r1 / MIB:.1f} MiB "
        f"({(r1 - r0) / MIB:+.2f} MiB); Python objects {o0} -> {o1} ({o1 - o0:+d})"
    )


def _ms(values: list[float]) -> str:
    return f"{sum(values) / len(values) * 1e3:.1f} ms" if values else "-"


def real(seconds: float, window: float, all_outputs: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-endurance-") as tmpdir:
        tmp = Path(tmpdir)
        port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "MIXER_ROOM_SECRET": SECRET,
            "MIXER_ROOM_URL": f"ws://127.0.0.1:{port}",
            "MIXER_LOG_LEVEL": "WARNING",
        }
        procs: list[subprocess.Popen[bytes]] = []
        logs = []

        def spawn(args: list[str], name: str, extra: dict[str, str] | None = None) -> int:
            log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed at the end
            logs.append(log)
            p = subprocess.Popen(
                [*benchlib.mixer_cmd(), *args],
                env={**env, **(extra or {})},
                cwd=benchlib.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            procs.append(p)
            return p.pid

        try:
            spawn(["room-server", "--host", "127.0.0.1", "--port", str(port)], "room")
            benchlib.wait_for_port(port)
            outputs = ["hls:bench"]
            if all_outputs:
                # every output kind at once: event HLS, both recordings, RTMP to a real
                # receiver (FFmpeg listening, decoding and discarding)
                rtmp_port = free_port()
                rtmp_url = f"rtmp://127.0.0.1:{rtmp_port}/live/endurance"
                log = open(tmp / "rtmp.log", "wb")  # noqa: SIM115 - closed at the end
                logs.append(log)
                procs.append(
                    subprocess.Popen(
                        ["ffmpeg", "-nostdin", "-loglevel", "error", "-listen", "1",
                         "-i", rtmp_url, "-f", "null", "-"],
                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    )
                )  # fmt: skip
                time.sleep(1.0)  # no probe: FFmpeg's one -listen would take it as the client
                outputs += [f"file:{tmp / 'rec.ts'}", f"file:{tmp / 'rec.m4a'}", rtmp_url]
            context = {
                "room": {"name": "endurance"},
                "outputs": outputs,
                "maxParticipantDuration": int(seconds) + 600,
            }
            worker = spawn(
                ["run", "--context", json.dumps(context)],
                "worker",
                {
                    "MIXER_METRICS_PORT": str(metrics_port),
                    "MIXER_HLS_DIR": str(tmp / "hls"),
                    **({"MIXER_HLS_PLAYLIST_TYPE": "event"} if all_outputs else {}),
                },
            )
            benchlib.wait_for_port(metrics_port)
            for i, hz in enumerate((330, 550, 770)):
                spawn(
                    ["talker", "--room", "endurance", "--identity", f"talker{i}", "--tone",
                     str(hz)],
                    f"talker{i}",
                )  # fmt: skip
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            deadline = time.monotonic() + 60
            while scrape(url).value("mixer_inputs") < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("the three talkers were not in the mix within 60 s")
                time.sleep(0.5)
            time.sleep(min(5.0, window))
            start = time.monotonic()
            samples: list[tuple[float, int, Scrape]] = []
            while True:
                now = time.monotonic() - start
                samples.append((now, tree_rss_bytes(worker), scrape(url)))
                if now >= seconds:
                    break
                time.sleep(min(10.0, window / 2, seconds - now))
        finally:
            for p in reversed(procs):
                stop_process(p)
            for log in logs:
                log.close()
            if os.environ.get("ENDURANCE_KEEP"):
                import shutil

                shutil.copytree(tmp, os.environ["ENDURANCE_KEEP"], dirs_exist_ok=True)

    def at(t: float) -> tuple[float, int, Scrape]:
        return min(samples, key=lambda s: abs(s[0] - t))

    first = (samples[0], at(window))
    last = (at(seconds - window), samples[-1])
    what = "event HLS + .ts + .m4a + RTMP" if all_outputs else "one live HLS output"
    print(
        f"real run: {seconds:.0f} s of room server + 3 talkers + worker ({what}), "
        f"windows of {window:.0f} s"
    )
    for name, (a, b) in (("start", first), ("end", last)):
        buf = Histogram.between(a[2], b[2], "mixer_input_buffered_latency_seconds")
        tick = Histogram.between(a[2], b[2], "mixer_tick_lateness_seconds")
        print(
            f"  {name:>5} ({a[0]:.0f}-{b[0]:.0f} s): worker RSS {b[1] / MIB:.1f} MiB; buffered "
            f"latency mean {buf.mean * 1e3:.1f} ms, p50 {buf.quantile(0.5) * 1e3:.1f} ms "
            f"(n={buf.count:.0f}); tick lateness p99 {tick.quantile(0.99) * 1e3:.2f} ms"
        )
    # about one sample per window (60 s) along the run, every 10 min for a long one
    step = max(1, round((600 if seconds >= 1800 else window) / 10))
    trend = ", ".join(f"{t:.0f}s {r / MIB:.1f}" for t, r, _ in samples[::step])
    print(f"  worker RSS along the run (MiB): {trend}")
    s0, s1 = samples[0][2], samples[-1][2]
    counts = {
        k: s1.value(f"mixer_input_{k}_frames_total") - s0.value(f"mixer_input_{k}_frames_total")
        for k in ("late", "concealed", "lost")
    }
    written = {
        k.split("kind=", 1)[1].rstrip("}"): v
        for k, v in s1.values.items()
        if k.startswith("mixer_output_bytes_total{")
    }
    print("  bytes written per output kind: " + ", ".join(
        f"{kind} {v / MIB:.1f} MiB" for kind, v in sorted(written.items())
    ))  # fmt: skip
    expected = 3 * 50 * samples[-1][0]
    print(
        f"  RSS growth {(samples[-1][1] - samples[0][1]) / MIB:+.2f} MiB over the run; frames "
        + ", ".join(f"{k} {v:.0f} ({v / expected:.3%})" for k, v in counts.items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 virtual hour, 10 s real run")
    parser.add_argument("--virtual-hours", type=float, default=24.0)
    parser.add_argument("--real-seconds", type=float, default=600.0)
    parser.add_argument(
        "--all-outputs",
        action="store_true",
        help="the real run writes every output kind (event HLS, .ts, .m4a, RTMP to FFmpeg)",
    )
    parser.add_argument("--skip-virtual", action="store_true", help="only the real run")
    args = parser.parse_args()
    hours = 1.0 if args.quick else args.virtual_hours
    seconds = 10.0 if args.quick else args.real_seconds
    window = 3.0 if args.quick else 60.0
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    print(
        ("method: (1) skipped (--skip-virtual);\n" if args.skip_virtual else
         "method: (1) tests/core/test_longrun.py's scenario in virtual time, first vs last hour;\n")
        + f"        (2) real processes for {seconds:.0f} s, worker RSS from /proc and its "
        f"/metrics, first vs last {window:.0f} s"
        + (" (every output kind)" if args.all_outputs else "")
    )  # fmt: skip
    if not args.skip_virtual:
        virtual(hours)
    real(seconds, window, args.all_outputs)
    print(f"end: {benchlib.load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
