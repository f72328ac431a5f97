"""An audio composition of 10 one-hour tracks: our engine vs ``ffmpeg -filter_complex amix``.

Method: 10 talkers, each a speech-like signal (a harmonic voice at its own pitch, its
syllables amplitude-modulated at ~4 Hz) pre-encoded once with libopus (32 kbps mono,
20 ms, as a browser sends), talking in spurts (2-8 s) between pauses (1-5 s) during
which it sends one DTX payload every 400 ms (as libwebrtc does); the payloads go through
the room server's own ``TrackRecorder`` into ``.mka`` recordings (talker i joins the
room at i*5 s).  The recordings are generated once and cached (``--cache``).  Then, one
after the other, each pinned to one core (``taskset -c``), in a child process measured by
``os.wait4`` (CPU time, peak RSS) and the wall clock:

- **ours**: ``mixer_ext.roomserver.compose.engine.compose`` (decode, place by offset,
  sum, the core's limiter, one encode), ``Trim=false``;
- **ffmpeg**: the same files, each ``aresample=async=1`` (timestamp gaps filled with
  silence) and ``adelay`` by its offset, ``amix=inputs=10:normalize=0``, the same
  encoder and settings (FFmpeg's AAC, ``aac_coder=fast``, mono 64 kbps, MP4), one
  thread.

- **before** (with ``--before REF``): the engine as it was at git commit ``REF`` (its
  ``mixer_ext`` exported with ``git archive`` into a temporary directory), on the same
  job, so one run shows a change's effect beside ffmpeg; its output must be the same bytes
  as ours (media and levels sidecar), or the run says how they differ.

x real time = the room's duration / wall time; "by cpu" = the room's duration / CPU time,
the fair figure on a machine shared with other work.  Every output is checked: each
talker's pitch must be present in its first spurt (FFT), so no side wins by doing nothing.

    .venv/bin/python bench/composition.py [--tracks 10] [--seconds 3600] [--quick]
        [--profile meeting|busy|both] [--before REF]
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib
import numpy as np

from mixer_ext.roomserver.compose.engine import levels_path
from mixer_ext.roomserver.compose.spec import Source, plan
from mixer_ext.roomserver.recorder import RecordingTags, TrackRecorder
from mixer_ext.sim.preencoded import FRAME_SAMPLES, SAMPLE_RATE, _encode_frames, _encoder
from mixer_ext.testing.timeline import decode_timeline, tone_level

JOIN_STEP = 5.0
LOOP_SECONDS = 8.0
FAILED = "FAILED:"


def pitch(i: int) -> float:
    return 150.0 + 37.0 * i  # 150..483 Hz fundamentals, distinct


def speech_loop(i: int) -> tuple[list[bytes], bytes]:
    """An 8 s speech-like loop for talker ``i`` (harmonics of its pitch, syllable envelope)."""
    n = int(LOOP_SECONDS * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = pitch(i)
    voice = sum(np.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * math.pi * 4.0 * t + i)
    pcm = np.round(0.25 * 32767 * voice / 2.3 * envelope).astype(np.int16)
    blocks = [pcm[k : k + FRAME_SAMPLES] for k in range(0, n, FRAME_SAMPLES)]
    payloads = _encode_frames(_encoder(1, 32_000), blocks, 1)
    ctx = _encoder(1, 32_000)
    ctx.options = {"application": "audio", "frame_duration": "20", "dtx": "1"}
    silence = _encode_frames(ctx, [np.zeros(FRAME_SAMPLES, np.int16)] * 10, 1)[-1]
    return payloads, silence


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def talk_spans(profile: str, tracks: int, seconds: float) -> list[list[tuple[float, float]]]:
    """Each talker's talk spurts, in seconds on the room's timeline.

    ``busy``: every talker on its own, spurts 2-8 s between pauses 1-5 s (about 57 % of
    the time each: ten people talking over one another, the worst case).
    ``meeting``: turn-taking, one speaker at a time holding the floor 2-8 s with
    0.3-1.5 s between turns, a backchannel (0.5-1.5 s, another talker) in one turn in
    five: about a tenth of the time each, as in a real ten-person meeting.
    """
    rng = random.Random(23)
    spans: list[list[tuple[float, float]]] = [[] for _ in range(tracks)]
    end_of_room = (tracks - 1) * JOIN_STEP + seconds
    if profile == "busy":
        for i in range(tracks):
            t, talking = i * JOIN_STEP, True
            while t < i * JOIN_STEP + seconds:
                length = rng.uniform(2, 8) if talking else rng.uniform(1, 5)
                if talking:
                    spans[i].append((t, t + length))
                t += length
                talking = not talking
        return spans
    t = 0.0
    while t < end_of_room:
        present = [i for i in range(tracks) if i * JOIN_STEP <= t]
        who = rng.choice(present)
        length = rng.uniform(2, 8)
        spans[who].append((t, t + length))
        if len(present) > 1 and rng.random() < 0.2:
            other = rng.choice([i for i in present if i != who])
            at = t + rng.uniform(0.5, max(0.6, length - 1.5))
            spans[other].append((at, at + rng.uniform(0.5, 1.5)))
        t += length + rng.uniform(0.3, 1.5)
    for s in spans:
        s.sort()
    return spans


PROFILES = {
    "meeting": "turn-taking, one speaker at a time, backchannels",
    "busy": "everyone talking on their own, spurts 2-8 s, pauses 1-5 s",
}


def talk_fraction(profile: str, tracks: int, seconds: float) -> float:
    spans = talk_spans(profile, tracks, seconds)
    total = sum(min(b, i * JOIN_STEP + seconds) - a for i, s in enumerate(spans) for a, b in s)
    return total / (tracks * seconds)


def record_talker(
    i: int, spans: list[tuple[float, float]], seconds: float, path: Path
) -> tuple[Source, float]:
    """Record talker ``i`` into ``path``; returns its source and a spurt's middle (room s)."""
    payloads, silence = speech_loop(i)
    offset = i * JOIN_STEP
    clock = _Clock(offset)
    frames = int(seconds / 0.02)
    rec = TrackRecorder(
        path,
        RecordingTags(track_name=path.stem),
        room_start=0.0,
        clock=clock,
        queue_packets=frames + 10,
    )
    k = 0
    silent = 0
    for n in range(frames):
        t = offset + n * 0.02
        while k < len(spans) and spans[k][1] <= t:
            k += 1
        if k < len(spans) and spans[k][0] <= t:
            rec.push(payloads[n % len(payloads)], n * FRAME_SAMPLES)
            silent = 0
        else:
            if silent % 20 == 0:  # DTX: one tiny payload every 400 ms, as libwebrtc sends
                rec.push(silence, n * FRAME_SAMPLES)
            silent += 1
        clock.now += 0.02
    rec.close()
    result = rec.join(600)
    assert result is not None and result.error is None, result
    inside = [
        (a + b) / 2
        for a, b in spans
        if b - a >= 1.5 and a >= offset + 0.5 and b <= offset + seconds - 0.5
    ]
    source = Source(path.stem, path, round(offset * SAMPLE_RATE), result.duration_samples)
    return source, (inside[0] if inside else -1.0)


def recordings(
    cache: Path, profile: str, tracks: int, seconds: float
) -> list[tuple[Source, float]]:
    index = cache / f"room-{profile}-{tracks}x{int(seconds)}.pickle"
    if index.exists():
        return pickle.loads(index.read_bytes())  # type: ignore[no-any-return]
    cache.mkdir(parents=True, exist_ok=True)
    spans = talk_spans(profile, tracks, seconds)
    out = [
        record_talker(i, spans[i], seconds, cache / f"{profile}{i}-{int(seconds)}.mka")
        for i in range(tracks)
    ]
    index.write_bytes(pickle.dumps(out))
    return out


def measured(cmd: list[str], core: int | None) -> tuple[float, float, float, int]:
    """Run ``cmd`` (pinned to ``core``): (wall s, cpu s, peak RSS MiB, exit code)."""
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # peak RSS: VmHWM of the process's own image (wait4's ru_maxrss carries the forking
    # parent's size across exec), read until it exits
    peak_kb = 0
    status_file = Path(f"/proc/{proc.pid}/status")
    while True:
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        waited, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if waited:
            break
        time.sleep(0.05)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    if proc.stderr is not None:
        proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, peak_kb / 1024, proc.returncode


OURS = """
import pickle, sys
sys.path.insert(0, {root!r})
from mixer_ext.roomserver.compose.engine import compose
compose(pickle.loads(bytes.fromhex({job!r})))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--profile", choices=("meeting", "busy", "both"), default="both")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mixer-ext-bench")
    ap.add_argument("--core", type=int, default=os.cpu_count() - 1 if os.cpu_count() else 0)
    ap.add_argument("--quick", action="store_true", help="3 tracks of 20 s")
    ap.add_argument(
        "--before", metavar="REF", help="also run the engine of git commit REF (same job)"
    )
    args = ap.parse_args()
    if args.quick:
        args.tracks, args.seconds = 3, 20.0
    if args.before:
        args.before_root = Path(tempfile.mkdtemp(prefix="mixer-ext-before-"))
        archive = subprocess.run(
            ["git", "-C", str(benchlib.ROOT), "archive", args.before, "mixer_ext"],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            print(f"--before {args.before}: {archive.stderr.decode(errors='replace').strip()}")
            return 2
        subprocess.run(["tar", "-x", "-C", str(args.before_root)], input=archive.stdout, check=True)
    print(f"machine: {benchlib.machine()}")
    print(
        f"method: {args.tracks} speech-like Opus tracks of {args.seconds:.0f} s (talker i joins "
        f"at i*{JOIN_STEP:.0f} s; DTX between spurts), recorded by TrackRecorder; composed to "
        "AAC/MP4 mono 64 kbps by ours and by ffmpeg amix, each in a child pinned to core "
        f"{args.core}; wall clock, CPU (wait4) and peak RSS (VmHWM)"
    )
    profiles = ("meeting", "busy") if args.profile == "both" else (args.profile,)
    failed = False
    try:
        for profile in profiles:
            failed = run(profile, args) or failed
    finally:
        if args.before:
            shutil.rmtree(args.before_root, ignore_errors=True)
    return 1 if failed else 0


def run(profile: str, args: argparse.Namespace) -> bool:
    """One profile, ours then ffmpeg; True when something failed."""
    print(f"\nprofile: {profile} ({PROFILES[profile]})")
    print(f"load before: {benchlib.load()}")
    t0 = time.monotonic()
    room = recordings(args.cache, profile, args.tracks, args.seconds)
    talk = talk_fraction(profile, args.tracks, args.seconds)
    print(
        f"recordings: {len(room)} in {args.cache} (ready in {time.monotonic() - t0:.1f} s), "
        f"talking {100 * talk:.0f} % of the time per track"
    )
    sources = [s for s, _ in room]
    room_seconds = max(s.end for s in sources) / SAMPLE_RATE
    work = Path(tempfile.mkdtemp(prefix="mixer-ext-compose-"))
    failed = False
    try:
        runs: list[tuple[str, tuple[float, float, float, int], Path]] = []
        if args.before:
            before_out = work / "before.mp4"
            job = plan(sources, before_out, fmt="mp4", trim=False)
            script = OURS.format(root=str(args.before_root), job=pickle.dumps(job).hex())
            before = measured([sys.executable, "-c", script], args.core)
            runs.append((f"before ({args.before})", before, before_out))
        ours_out = work / "ours.mp4"
        job = plan(sources, ours_out, fmt="mp4", trim=False)
        script = OURS.format(root=str(benchlib.ROOT), job=pickle.dumps(job).hex())
        ours = measured([sys.executable, "-c", script], args.core)
        runs.append(("ours", ours, ours_out))
        ff_out = work / "ffmpeg.mp4"
        inputs: list[str] = []
        chains: list[str] = []
        for k, s in enumerate(sources):
            inputs += ["-i", str(s.path)]
            delay = round(s.offset * 1000 / SAMPLE_RATE)
            chains.append(f"[{k}:a]aresample=async=1:first_pts=0,adelay={delay}:all=1[a{k}]")
        mix = "".join(f"[a{k}]" for k in range(len(sources)))
        graph = ";".join(chains) + f";{mix}amix=inputs={len(sources)}:normalize=0[m]"
        ff_cmd = [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-threads",
            "1",
            "-filter_threads",
            "1",
            *inputs,
            "-filter_complex",
            graph,
            "-map",
            "[m]",
            "-ac",
            "1",
            "-c:a",
            "aac",
            "-aac_coder",
            "fast",
            "-b:a",
            "64k",
            str(ff_out),
        ]
        ff = measured(ff_cmd, args.core)
        runs.append(("ffmpeg", ff, ff_out))
        print(f"room duration: {room_seconds:.1f} s")
        width = max(len(name) for name, _, _ in runs)
        print(
            f"{'method':{width}} {'wall':>10} {'cpu':>10} {'x real time':>12} "
            f"{'x rt by cpu':>12} {'peak RSS':>12}"
        )
        for name, (wall, cpu, rss, code), _ in runs:
            if code != 0:
                print(f"{FAILED} {name} exited {code}")
                failed = True
                continue
            print(
                f"{name:{width}} {wall:9.2f}s {cpu:9.2f}s {room_seconds / wall:11.1f}x "
                f"{room_seconds / cpu:11.1f}x {rss:8.1f} MiB"
            )
        if not failed:
            print(f"ratio: ffmpeg wall / ours wall = {ff[0] / ours[0]:.2f}x")
            print(f"ratio: ffmpeg cpu / ours cpu = {ff[1] / ours[1]:.2f}x")
            if args.before:
                print(f"ratio: before cpu / ours cpu = {before[1] / ours[1]:.2f}x")
                same = [
                    what
                    for what, a, b in (
                        ("media", before_out, ours_out),
                        ("levels", levels_path(before_out), levels_path(ours_out)),
                    )
                    if a.read_bytes() == b.read_bytes()
                ]
                verdict = "the same bytes" if len(same) == 2 else f"{FAILED} only {same} alike"
                print(f"check ours vs before: media and levels sidecar are {verdict}")
                failed = failed or len(same) != 2
            for name, _, out in runs:
                pcm = decode_timeline(out, keep_start=True)
                missing = [
                    i
                    for i, (_, mid) in enumerate(room)
                    if mid >= 0 and tone_level(pcm, pitch(i), mid - 0.5, mid + 0.5) < 0.01
                ]
                verdict = "every talker heard" if not missing else f"{FAILED} missing {missing}"
                print(f"check {name}: {verdict} ({len(pcm) / SAMPLE_RATE:.1f} s decoded)")
                failed = failed or bool(missing)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load after: {benchlib.load()}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
