"""Latency: inside the mixer (input -> encoded packet) and glass to player (talker -> HLS).

Method.  A room server (``mixer-ext room-server``) and a click talker (this
script with ``--click-talker``: a real aiortc peer, Opus) run as processes;
two workers (``mixer_ext.worker.runner.Worker``, one HLS output each) run *in
this process* side by side in the same room, so they get the same input: one
with today's fixed ``medium`` jitter buffer, one ``adaptive`` (issue 27.3); the
default one also serves its HLS over its HTTP endpoint to a player (this
script with ``--player``, a process).  The talker sends quiet noise with a
click every 1.06 s: a 10 ms, 2 kHz burst at half full scale starting on the
first sample of a 20 ms frame, stamped with ``time.time()`` when the paced
track hands that frame to aiortc's encoder (a microphone would hand it over at
the end of its 20 ms, so glass time is up to 20 ms earlier than this stamp: the
figures are that much optimistic).  The noise keeps every frame a real Opus
frame: digital silence would be 3-byte DTX payloads, which the input never
decodes, so the jitter buffer would see only the clicks.

Two phases: the network (loopback, the machine's load) as it is; then each
payload is delayed by uniform 0-30 ms and 3 % are dropped, in front of both
workers' inputs alike (decided by the payload's bytes, in this process: a
simulated network, stated as such), so the late / concealed / lost counts show
what each mode costs the mix.

(a) Inside the mixer.  Wrapped in this process (no product code changed;
the wrappers cost one ``max(abs())`` over 960 samples per frame):
``Input.push_encoded`` records when each payload arrives and ``Input.push_samples``
whether its decoded samples hold a click onset (so arrival = the payload's),
``OutputPipeline.on_mix`` where the onset lands in the mix (sample P; "in the
mix" = the tick's time + P's offset in its 20 ms), ``AacEncoder.encode`` when
the encoder thread starts on a frame (the hand-off), and ``Output.offer`` when
each AAC packet is handed to the outputs.  Latency = hand-off of the packet
whose [pts, pts + duration) holds P, minus the arrival.  It includes the
jitter buffer, waiting for the tick, the encoder queue and AAC's lookahead
(FFmpeg's encoder hands out the packet for [Q, Q + 1024) once it has samples
up to Q + 3072: 43-64 ms of stream, whole ticks).

(b) Glass to player.  The player polls the playlist over HTTP every 0.5 s,
downloads every new segment at once and decodes it with one AAC decoder
kept across segments (as a player appends to one buffer).  A click's mix
time is the segment's ``EXT-X-PROGRAM-DATE-TIME`` plus its onset's offset in
the segment; it is paired with the emission 0..1 s before it.  Two figures:

* *available*: when the segment holding the click finished downloading,
  minus the emission: the earliest any player can have it;
* *played*: a player that joins at one of the poll instants J and starts at
  the live edge as hls.js does by default (position = end of the playlist -
  3 x target duration, ``liveSyncDurationCount``), starts playing when that
  segment is downloaded (J + its download time), plays in real time, and
  pauses if a segment is not downloaded by the time it is due (stall added).
  Every join instant after the playlist covers 3 target durations is a
  player; the distribution is over (click, player) pairs, so it spans the
  phase of the join inside a segment, which is what a listener gets.

    .venv/bin/python bench/latency.py [--seconds 90 --impaired 60 --settle 15]
    .venv/bin/python bench/latency.py --quick        # 14 s + 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from benchlib import free_port, percentile, stop_process

SECRET = "bench-secret-not-for-production-0123456789"
ROOM = "latency"
#: frames between clicks (1.06 s): not a divisor of the segment length, so clicks fall at
#: every phase of a segment over a run; more than the talker-to-mix latency, so pairing
#: a click with the emission just before it is unambiguous
CLICK_EVERY = 53
ONSET = 8000  # int16: a click sample (the click is 16384 peak; between clicks noise)
NOISE = 300  # int16 peak of the noise between clicks
POLL = 0.5
LIVE_SYNC_COUNT = 3  # hls.js liveSyncDurationCount default


# --- click talker ---------------------------------------------------------------------


async def run_click_talker(url: str) -> None:
    """``--click-talker``: joins ROOM, prints ``CLICK <k> <time.time()>`` per click."""
    from mixer_ext.roomserver.tokens import mint_token
    from mixer_ext.sim.talker import Talker
    from mixer_ext.sim.tracks import PacedAudioTrack

    class ClickTrack(PacedAudioTrack):
        rng = np.random.default_rng(7)

        def samples(self, n: int) -> np.ndarray:
            # quiet noise between clicks: a talker who is talking (silence would be Opus
            # DTX-sized payloads, which the input never decodes: no steady stream at all)
            out = self.rng.uniform(-NOISE, NOISE, 960)
            if n % CLICK_EVERY == 0 and n > 0:
                t = np.arange(480) / 48000
                out[:480] = 16384 * np.sin(2 * np.pi * 2000 * t)
                print("CLICK", n // CLICK_EVERY, repr(time.time()), flush=True)
            return out

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    talker = Talker(url, ROOM, "clicker", mint_token(SECRET, ROOM, "clicker", 3600), ClickTrack())
    task = asyncio.create_task(talker.run(), name="click-talker")
    await stop.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=10)


# --- player ---------------------------------------------------------------------------


def run_player(url: str, out: Path) -> None:
    """``--player``: poll ``url`` (a live playlist) until SIGTERM; write what it saw to ``out``."""
    import av

    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    base = url.rsplit("/", 1)[0]
    decoder: Any = None
    seen: set[str] = set()
    segments: list[dict[str, Any]] = []
    polls: list[dict[str, Any]] = []
    clicks: list[float] = []
    quiet_until = 0.0  # mix wall time before which a loud sample continues the last click
    while not stopping:
        t_poll = time.time()
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            time.sleep(POLL)
            continue
        target = 0.0
        pdt: float | None = None
        dur = 0.0
        listed: list[tuple[str, float, float]] = []
        for ln in text.splitlines():
            if ln.startswith("#EXT-X-TARGETDURATION:"):
                target = float(ln.split(":", 1)[1])
            elif ln.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                pdt = datetime.fromisoformat(ln.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            elif ln.startswith("#EXTINF:"):
                dur = float(ln.split(":", 1)[1].split(",")[0])
            elif ln and not ln.startswith("#"):
                assert pdt is not None, "a segment without EXT-X-PROGRAM-DATE-TIME"
                listed.append((ln, pdt, dur))
                pdt = None
        if listed:
            polls.append(
                {"t": t_poll, "first": listed[0][1], "edge": listed[-1][1] + listed[-1][2],
                 "target": target}
            )  # fmt: skip
        for uri, start, dur in listed:
            if uri in seen:
                continue
            seen.add(uri)
            t0 = time.time()
            with urllib.request.urlopen(f"{base}/{uri}", timeout=5) as resp:
                blob = resp.read()
            t1 = time.time()
            segments.append(
                {"uri": uri, "start": start, "dur": dur, "listed": t_poll, "fetch": t1 - t0,
                 "downloaded": t1}
            )  # fmt: skip
            with av.open(io.BytesIO(blob), format="mpegts") as container:
                stream = container.streams.audio[0]
                if decoder is None:
                    decoder = av.CodecContext.create(stream.codec_context.name, "r")
                first_pts: float | None = None
                for packet in container.demux(stream):
                    if packet.pts is None:
                        continue
                    pts = float(packet.pts * packet.time_base)
                    if first_pts is None:
                        first_pts = pts
                    for frame in decoder.decode(packet):
                        mono = frame.to_ndarray()
                        mono = mono.reshape(len(frame.layout.channels), -1)[0]
                        loud = np.flatnonzero(np.abs(mono) > ONSET / 32768)
                        if not len(loud):
                            continue
                        # the decoder's frame pts is its packet's; offset from the segment start
                        fpts = float(frame.pts * frame.time_base) if frame.pts is not None else pts
                        at = start + (fpts - first_pts) + int(loud[0]) / frame.sample_rate
                        if at >= quiet_until:
                            clicks.append(at)
                        quiet_until = at + 0.5
        time.sleep(max(0.0, POLL - (time.time() - t_poll)))
    out.write_text(json.dumps({"segments": segments, "polls": polls, "clicks": clicks}))


# --- the measurement ------------------------------------------------------------------

#: the two jitter-buffer modes run side by side: today's fixed default and the adaptive one
MODES = ("medium", "adaptive")
#: the impaired phase: each payload delayed by uniform 0..IMPAIR_JITTER s, IMPAIR_LOSS dropped
IMPAIR_JITTER = 0.030
IMPAIR_LOSS = 0.03


@dataclass
class Observed:
    """What the wrappers saw for one worker, in ``time.perf_counter()`` seconds."""

    arrivals: list[float] = field(default_factory=list)
    mixed: list[tuple[int, float]] = field(default_factory=list)  # (sample P, its time)
    packets: list[tuple[int, int, float]] = field(default_factory=list)  # (pts, duration, time)
    inputs: list[Any] = field(default_factory=list)  # the worker's Input objects
    handoff: list[float] = field(default_factory=list)  # on_mix -> the encoder starts on it


@dataclass
class Phase:
    """A stretch of the run: the network as it is, or impaired in front of both workers."""

    name: str
    start: float  # perf_counter
    end: float = float("inf")
    counters: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # at its start
    final: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    depth: dict[str, float] = field(default_factory=dict)  # ms, at its end
    trace: list[tuple[int, float]] = field(default_factory=list)  # (RTP ts, arrival s)


def counters(inputs: list[Any]) -> tuple[int, int, int]:
    """(late, concealed ticks, lost) summed over a worker's inputs."""
    return (
        sum(i.late_frames for i in inputs),
        sum(i.concealed_ticks for i in inputs),
        sum(i.lost_frames for i in inputs),
    )


def instrument(obs: dict[str, Observed], impair: dict[str, Any]) -> None:
    """Wrap the input, OutputPipeline.on_mix and Output.offer (class attributes, this process).

    The input decodes in the tick: a payload's arrival is when ``push_encoded`` got it,
    and the click onset is seen when its samples reach the jitter buffer
    (``push_samples``, stamped with the payload's RTP timestamp as pts).  Each worker is
    told apart by its jitter-buffer mode.  While ``impair["on"]``, every payload is
    delayed (uniform 0..``IMPAIR_JITTER``) or dropped (``IMPAIR_LOSS``) before it reaches
    the input, decided by the payload's bytes: both workers get the same impairment.
    """
    import random

    from mixer_ext.core.input import Input
    from mixer_ext.encode.encoder import AacEncoder, EncodedPacket
    from mixer_ext.encode.fanout import OutputPipeline
    from mixer_ext.outputs.base import Output

    push_encoded, push_samples = Input.push_encoded, Input.push_samples
    on_mix, offer, encode = OutputPipeline.on_mix, Output.offer, AacEncoder.encode
    handed: dict[int, tuple[float, str]] = {}  # id(frame) -> (on_mix time, mode)
    last = {f"{m}:{k}": -1.0 for m in MODES for k in ("in", "mix")}
    arrived: dict[tuple[int, int], float] = {}  # (input, pts) -> when its payload arrived
    seen_inputs: set[int] = set()

    def received(self: Any, *args: Any) -> None:
        t = time.perf_counter()
        if id(self) not in seen_inputs:
            seen_inputs.add(id(self))
            obs[self.jitter.value].inputs.append(self)
        push_encoded(self, *args)
        arrived[(id(self), self._ts_ext)] = t
        arrival = args[4] if len(args) > 4 else None
        if self.jitter.value == MODES[0] and arrival is not None and len(args[3]) > 3:
            impair["trace"].append((impair["phase"], self._ts_ext, arrival))
        if len(arrived) > 10_000:
            arrived.clear()

    def push_encoded_w(
        self: Any, codec: Any, seq: int, ts: int, payload: bytes, arrival: float | None = None
    ) -> None:
        if not impair["on"]:
            received(self, codec, seq, ts, payload, arrival)
            return
        rng = random.Random(hash(payload))
        if rng.random() < IMPAIR_LOSS:
            return
        d = rng.uniform(0.0, IMPAIR_JITTER)
        later = None if arrival is None else arrival + d
        impair["loop"].call_later(d, received, self, codec, seq, ts, payload, later)

    def push_samples_w(self: Any, pts: int, samples: Any, *args: Any, **kwargs: Any) -> None:
        t = arrived.pop((id(self), pts), time.perf_counter())
        mode = self.jitter.value
        if t - last[f"{mode}:in"] > 0.5 and int(np.abs(samples).max()) > ONSET:
            last[f"{mode}:in"] = t
            obs[mode].arrivals.append(t)
        push_samples(self, pts, samples, *args, **kwargs)

    def on_mix_w(self: Any, frame: Any) -> None:
        t = time.perf_counter()
        mode = self.settings.jitter_buffer.value
        loud = np.flatnonzero(np.abs(frame.samples[:, 0].astype(np.int32)) > ONSET)
        if len(loud) and t - last[f"{mode}:mix"] > 0.5:
            last[f"{mode}:mix"] = t
            # in the mix = when the tick ran + where in its 20 ms the onset sounds
            obs[mode].mixed.append((int(frame.pts) + int(loud[0]), t + int(loud[0]) / 48000))
        handed[id(frame)] = (time.perf_counter(), mode)
        on_mix(self, frame)

    def encode_w(self: Any, frame: Any) -> Any:
        got = handed.pop(id(frame), None)
        if got is not None:
            obs[got[1]].handoff.append(time.perf_counter() - got[0])
        if len(handed) > 1000:
            handed.clear()
        return encode(self, frame)

    def offer_w(self: Any, item: Any) -> None:
        if isinstance(item, EncodedPacket):
            mode = self.label.rsplit("-", 1)[-1]
            obs[mode].packets.append((item.pts, item.duration, time.perf_counter()))
        offer(self, item)

    Input.push_encoded = push_encoded_w  # type: ignore[method-assign]
    Input.push_samples = push_samples_w  # type: ignore[method-assign]
    OutputPipeline.on_mix = on_mix_w  # type: ignore[method-assign]
    Output.offer = offer_w  # type: ignore[method-assign]
    AacEncoder.encode = encode_w  # type: ignore[method-assign]


def inside_mixer(
    obs: Observed, since: float = 0.0, until: float = float("inf")
) -> tuple[list[float], list[float], list[float]]:
    """(arrival->packet, arrival->mix, mix->packet) seconds per click arriving in the span."""
    total, to_mix, to_packet = [], [], []
    starts = [p[0] for p in obs.packets]
    for sample, t_mix in obs.mixed:
        i = bisect.bisect_right(obs.arrivals, t_mix) - 1
        if i < 0 or t_mix - obs.arrivals[i] > 0.5:
            continue
        if not since <= obs.arrivals[i] < until:
            continue
        j = bisect.bisect_right(starts, sample) - 1
        if j < 0 or not (starts[j] <= sample < starts[j] + obs.packets[j][1]):
            continue
        t_in, t_out = obs.arrivals[i], obs.packets[j][2]
        total.append(t_out - t_in)
        to_mix.append(t_mix - t_in)
        to_packet.append(t_out - t_mix)
    return total, to_mix, to_packet


def replay(trace: list[tuple[int, float]], mode: str) -> tuple[list[float], list[float], Any]:
    """The recorded arrivals again, in virtual time, through one mode's jitter buffer.

    Sans-I/O: the real ``Input`` fed each recorded payload's RTP timestamp and arrival
    (a 20 ms block holding a marker value, so where it plays is read from the output),
    pulled once per tick on the same timeline; no event loop, no load.  Per frame:
    arrival -> its first sample's place in the mix, and -> the tick at which FFmpeg's
    AAC encoder hands out the packet holding it ([Q, Q + 1024) needs samples up to
    Q + 3072).  Returns (to the mix, to the packet) in seconds, and the input.
    """
    from mixer_ext.core.input import Input
    from mixer_ext.settings import JitterBufferSize

    T = 960
    if not trace:
        return [], [], Input(JitterBufferSize(mode))
    ts0 = min(ts for ts, _ in trace)
    frames = sorted(((arr * 48000, ts - ts0) for ts, arr in trace), key=lambda f: f[0])
    first_tick = int(frames[0][0] // T)
    inp = Input(JitterBufferSize(mode), start_tick=first_tick)
    ticks = int(frames[-1][0] // T) - first_tick + 10
    out = np.zeros(ticks * T, np.int32)
    arrival: dict[int, float] = {}
    i = 0
    for n in range(ticks):
        now = (first_tick + n) * T
        while i < len(frames) and frames[i][0] <= now:
            arr, pts = frames[i]
            arrival.setdefault(pts // T, arr)
            inp.push_samples(pts, np.full((T, 2), 1000 + (pts // T) % 30000, np.int16), arr)
            i += 1
        out[n * T : (n + 1) * T] = inp.pull()[:, 0]
    to_mix, to_packet = [], []
    starts = np.flatnonzero(np.diff(np.concatenate(([-1], out))) != 0)
    seen: set[int] = set()
    for s in starts.tolist():
        v = int(out[s]) - 1000
        if v < 0 or v in seen or s + 400 > len(out) or not (out[s : s + 400] == out[s]).all():
            continue
        seen.add(v)
        k = v  # frame index (runs shorter than 10 min: no marker repeats)
        if k not in arrival:
            continue
        m = (first_tick * T) + s  # the sample's place in the mix, on the mixer timeline
        q = (m // 1024) * 1024
        handed = (-(-(q + 3072) // T) - 1) * T  # the tick that completes Q + 3072
        to_mix.append((m - arrival[k]) / 48000)
        to_packet.append((handed - arrival[k]) / 48000)
    return to_mix, to_packet, inp


def glass_to_player(
    emitted: list[float], seen: dict[str, Any]
) -> tuple[list[float], list[float], int, int]:
    """(available latencies, played latencies, players modelled, stalls)."""
    segs = sorted(seen["segments"], key=lambda s: s["start"])
    seg_starts = [s["start"] for s in segs]
    pairs: list[tuple[float, float]] = []  # (emission, mix time of the click)
    for at in seen["clicks"]:
        i = bisect.bisect_right(emitted, at) - 1
        if i >= 0 and at - emitted[i] < 1.0:
            pairs.append((emitted[i], at))
    available = []
    for e, at in pairs:
        k = bisect.bisect_right(seg_starts, at) - 1
        if k >= 0:
            available.append(segs[k]["downloaded"] - e)
    played: list[float] = []
    players = stalls = 0
    polls = [p for p in seen["polls"] if p["edge"] - p["first"] >= LIVE_SYNC_COUNT * p["target"]]
    if not polls:  # a short (--quick) run: joins before the playlist covered the live window
        print("    (no join after the playlist covered 3 target durations: joins at its start)")
        polls = seen["polls"]
    for poll in polls:
        target = poll["target"]
        # hls.js: 3 target durations behind the end, or the playlist's start if shorter
        pos = max(poll["first"], poll["edge"] - LIVE_SYNC_COUNT * target)
        k = bisect.bisect_right(seg_starts, pos) - 1
        if k < 0:
            continue
        players += 1
        # playback starts when the start segment is downloaded by a player joining now
        wall = max(poll["t"], segs[k]["downloaded"]) + segs[k]["fetch"]
        offset = wall - pos  # media time x plays at x + offset
        schedule = []
        for s in segs[k + 1 :]:
            due = s["start"] + offset
            if s["downloaded"] > due:  # not there in time: the player stalls until it is
                offset += s["downloaded"] - due
                stalls += 1
            schedule.append((s["start"], offset))
        for e, at in pairs:
            if at < pos:
                continue
            m = bisect.bisect_right(schedule, (at, float("inf"))) - 1
            off = schedule[m][1] if m >= 0 else wall - pos
            played.append(at + off - e)
    return available, played, players, stalls


async def run(
    clean: float, impaired: float, tmp: Path
) -> tuple[dict[str, Observed], list[Phase], list[float], dict[str, Any]]:
    """One room, one click talker, two workers side by side (``MODES``), the network as
    it is for ``clean`` seconds, then impaired for ``impaired`` seconds."""
    from mixer_ext.context import load_context
    from mixer_ext.settings import JitterBufferSize, Settings
    from mixer_ext.worker.runner import Worker

    port, http_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{port}"
    env = {**os.environ, "MIXER_ROOM_SECRET": SECRET, "MIXER_LOG_LEVEL": "WARNING"}
    log = open(tmp / "room.log", "wb")  # noqa: SIM115, ASYNC230 - closed below; before any I/O
    procs: list[subprocess.Popen[bytes]] = []
    obs = {m: Observed() for m in MODES}
    impair: dict[str, Any] = {
        "on": False,
        "loop": asyncio.get_running_loop(),
        "phase": 0,
        "trace": [],  # (phase, RTP timestamp, arrival s) as the first mode's input got them
    }
    instrument(obs, impair)
    workers: list[tuple[Any, asyncio.Task[Any]]] = []
    try:
        server = subprocess.Popen(  # noqa: ASYNC220 - start-up, nothing runs yet
            [*benchlib.mixer_cmd(), "room-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=benchlib.ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(server)
        benchlib.wait_for_port(port)
        for mode in MODES:
            settings = Settings(
                room_url=url,
                room_secret=SECRET,  # type: ignore[arg-type]
                hls_dir=tmp / "hls",
                # the player listens to the default mode's worker
                http_port=http_port if mode == Settings().jitter_buffer.value else None,
                log_level="WARNING",
                jitter_buffer=JitterBufferSize(mode),
            )
            context = load_context(
                json.dumps(
                    {
                        "room": {"name": ROOM},
                        "identity": f"bench-{mode}",
                        "outputs": [f"hls:bench-{mode}"],
                        "maxParticipantDuration": 3600,
                    }
                )
            )
            worker = Worker(context, settings)
            workers.append((worker, asyncio.create_task(worker.run(), name=f"bench-{mode}")))
        talker = subprocess.Popen(  # noqa: ASYNC220 - a fork: ~ms, before the window
            [sys.executable, __file__, "--click-talker", "--url", url],
            env=env, cwd=benchlib.ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(talker)
        emitted: list[float] = []

        async def read_clicks() -> None:
            assert talker.stdout is not None
            while line := await asyncio.to_thread(talker.stdout.readline):
                parts = line.decode().split()
                if parts and parts[0] == "CLICK":
                    emitted.append(float(parts[2]))

        reader = asyncio.create_task(read_clicks(), name="bench-click-reader")
        default = Settings().jitter_buffer.value
        playlist = f"http://127.0.0.1:{http_port}/hls/bench-{default}/index.m3u8"
        player = subprocess.Popen(  # noqa: ASYNC220 - a fork: ~ms
            [sys.executable, __file__, "--player", "--url", playlist,
             "--out", str(tmp / "player.json")],
            env=env, cwd=benchlib.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(player)
        # the phases start once both workers hear the talker (joining takes seconds under load)
        for _ in range(300):  # at most 60 s
            if all(sum(i.frames_received for i in obs[m].inputs) >= 50 for m in MODES):
                break
            await asyncio.sleep(0.2)
        phases: list[Phase] = []
        for index, (name, seconds, on) in enumerate(
            (
                ("as is", clean, False),
                (f"+0-{IMPAIR_JITTER * 1e3:.0f} ms, {IMPAIR_LOSS:.0%} loss", impaired, True),
            )
        ):
            impair["on"], impair["phase"] = on, index
            phase = Phase(name, time.perf_counter())
            phase.counters = {m: counters(obs[m].inputs) for m in MODES}
            phases.append(phase)
            await asyncio.sleep(seconds)
            phase.end = time.perf_counter()
            phase.final = {m: counters(obs[m].inputs) for m in MODES}
            phase.depth = {
                m: max((i.current_depth_samples / 48 for i in obs[m].inputs), default=0.0)
                for m in MODES
            }
        impair["on"] = False
        stop_process(player)
        stop_process(talker)
        await asyncio.wait({reader}, timeout=5)
        for worker, _ in workers:
            worker.request_stop()
        await asyncio.wait({task for _, task in workers}, timeout=30)
        seen = json.loads((tmp / "player.json").read_text())
        for phase_index, ts, arrival in impair["trace"]:
            phases[phase_index].trace.append((ts, arrival))
        return obs, phases, emitted, seen
    finally:
        for p in reversed(procs):
            stop_process(p)
        log.close()


def pp(v: list[float]) -> str:
    """p50 / p99 in ms."""
    if not v:
        return "no samples"
    return f"{percentile(v, 50) * 1e3:.1f} / {percentile(v, 99) * 1e3:.1f}"


def ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 50) * 1e3:7.1f} ms  p99 {percentile(values, 99) * 1e3:7.1f} ms"
        f"  (min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f}, n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="14 s + 10 s smoke run")
    parser.add_argument("--seconds", type=float, default=90.0, help="network as it is")
    parser.add_argument("--impaired", type=float, default=60.0, help="then impaired")
    parser.add_argument("--settle", type=float, default=15.0, help="first seconds not counted")
    parser.add_argument("--click-talker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--player", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.click_talker:
        asyncio.run(run_click_talker(args.url))
        return 0
    if args.player:
        run_player(args.url, args.out)
        return 0
    clean, impaired, settle = (
        (14.0, 10.0, 6.0) if args.quick else (args.seconds, args.impaired, args.settle)
    )
    from mixer_ext.settings import Settings

    defaults = Settings()
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    method = [
        "method: one click talker (aiortc, Opus; quiet noise between clicks) -> room server ->",
        f"two workers in this process side by side, jitter buffer {' vs '.join(MODES)}",
        f"(default: {defaults.jitter_buffer.value}), each AAC, HLS "
        f"{defaults.hls_segment_duration:g} s segments, list size {defaults.hls_list_size};",
        f"the network as it is for {clean:.0f} s (the first {settle:.0f} s not counted: the "
        "adaptive depth starts at 40 ms),",
        f"then each payload delayed by uniform 0-{IMPAIR_JITTER * 1e3:.0f} ms and "
        f"{IMPAIR_LOSS:.0%} dropped in front of both inputs alike for {impaired:.0f} s;",
        f"a click every {CLICK_EVERY * 0.02:.2f} s;",
        "(a) Input.push_encoded arrival -> the onset in the mix (tick time + its offset in",
        "the 20 ms) -> Output.offer of the AAC packet holding it (wrappers in this process);",
        "(b) emission (time.time() when the frame enters the talker's encoder) ->",
        "segment downloaded ('available') / heard by a player that joins at the live edge",
        f"like hls.js ({LIVE_SYNC_COUNT} x target duration behind the end, real time, "
        f"stalls added), on the {defaults.jitter_buffer.value} worker -> HTTP -> Python "
        f"player polling every {POLL} s",
    ]
    print("\n        ".join(method))
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmpdir:
        obs, phases, emitted, seen = asyncio.run(run(clean, impaired, Path(tmpdir)))
    default = defaults.jitter_buffer.value
    counted = [(phases[0], phases[0].start + settle), (phases[1], phases[1].start)]
    total, to_mix, to_packet = inside_mixer(obs[default], counted[0][1], phases[0].end)
    available, played, players, stalls = glass_to_player(emitted, seen)
    print(f"clicks emitted {len(emitted)}, seen by the player {len(seen['clicks'])}")
    print(f"(a) in mixer, arrival -> packet to outputs: {ms(total)}  [{default}, network as is]")
    print(f"      arrival -> in the mix (jitter buffer + tick): {ms(to_mix)}")
    print(f"      mix -> AAC packet handed to the outputs:      {ms(to_packet)}")
    print(f"      of which the hand-off to the encoder thread:  {ms(obs[default].handoff)}")
    print("    side by side, same input, one run (p50 / p99 ms; counts over the phase):")
    print(
        f"    {'input':<24} {'jitter buffer':<13} {'arrival->in mix':>17} "
        f"{'arrival->AAC packet':>21} {'mix->packet p50':>16} {'late':>5} "
        f"{'concealed':>9} {'lost':>5} {'depth at end':>12}"
    )
    for phase, since in counted:
        for mode in MODES:
            t, m, k = inside_mixer(obs[mode], since, phase.end)
            late, conc, lost = (
                b - a for a, b in zip(phase.counters[mode], phase.final[mode], strict=True)
            )

            k50 = f"{percentile(k, 50) * 1e3:.1f}" if k else "-"
            print(
                f"    {phase.name:<24} {mode:<13} {pp(m):>17} {pp(t):>21} {k50:>16} "
                f"{late:>5} {conc:>9} {lost:>5} {phase.depth[mode]:>9.1f} ms  (n={len(t)})"
            )
    print(
        "    the same arrivals replayed in virtual time through each mode (sans-I/O: the real"
        " Input, no load; every 20 ms frame counted):"
    )
    for phase in phases:
        for mode in MODES:
            m, t, inp = replay(phase.trace, mode)
            print(
                f"    {phase.name:<24} {mode:<13} {pp(m):>17} {pp(t):>21} {'':>16} "
                f"{inp.late_frames:>5} {inp.concealed_ticks:>9} {inp.lost_frames:>5} "
                f"{inp.current_depth_samples / 48:>9.1f} ms  (n={len(t)})"
            )
    # a quiet machine, for reference: what this loaded one could not show
    rng = np.random.default_rng(1)
    for mode in MODES:
        m_all: list[float] = []
        t_all: list[float] = []
        for base in (0.0037, 0.0100, 0.0173):  # three sender phases against the ticks
            quiet = [(k * 960, base + k * 0.02 + rng.uniform(0, 0.002)) for k in range(2250)]
            m, t, inp = replay(quiet, mode)
            m_all += m[750:]  # after 15 s (the adaptive depth starts at 40 ms)
            t_all += t[750:]
        print(
            f"    {'synthetic 0-2 ms jitter':<24} {mode:<13} {pp(m_all):>17} {pp(t_all):>21} "
            f"{'':>16} {'':>5} {'':>9} {'':>5} {inp.current_depth_samples / 48:>9.1f} ms  "
            f"(n={len(t_all)}, 3 sender phases, after 15 s)"
        )
    print(f"(b) glass -> segment available at the player:    {ms(available)}")
    print(f"    glass -> played (live-edge player model):    {ms(played)}")
    print(f"    players modelled: {players} join instants, stalls: {stalls}")
    print(f"end: {benchlib.load()}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
