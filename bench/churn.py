"""Churn soak: twilio-protocol participants joining, muting, dropping and leaving in waves.

Method: the room server (with the twilio-video.js gateway) runs in its own process; the
participants are aiortc clients speaking twilio-video.js's wire protocol
(``twilio_room.Speaker``: TCMP + v2 signaling, a tone each), spread over several load-generator
processes: each listener alone in one, the publishers round-robin over ``--publisher-procs``
(at nice 10), so that the soak measures the room server and not one starved Python process.
Every wave (``--wave`` seconds) picks, at random (seeded): some absent participants to join,
some present ones to mute or unmute (a participant state update, as ``track.disable()``
sends), some to **drop** (the socket closed without ``bye``, as a phone losing its network)
and some to **leave** (``bye``).  After each wave settles, it checks:

* **no ghost**: the Video REST's connected participants are exactly the live ones;
* **no collateral disconnect**: no participant that was not dropped or told to leave got an
  error or lost its socket;
* **everyone hears everyone**: each listener receives packets on a stream from every other
  live, unmuted participant within the settle time.

``--listeners`` of the N (2) stay all along subscribed to everyone; the others publish only
(``automaticSubscription: false``): everyone subscribed to everyone would be N*(N-1) forwarded
streams, more than two shared cores carry at 30 (``twilio_room.py`` measures 0.4 % of a core
per stream).  Every wave line gives the room server's CPU over the wave (utime+stime of its
process, from /proc), the load generators' worst event-loop lag and the datagrams the kernel
dropped at full receive buffers, server side and load-generator side, and the load average;
the end gives each process's CPU.  ``--diagnose DIR`` writes every process's timestamped
media states (ICE, DTLS, consent checks, loop lag: ``mediadiag.py``) into DIR.
``--server-consent aioice`` runs the room server with aioice's own consent timing (the
"before" of ``mixer_ext/roomserver/consent.py``); the clients use RFC 7675's timing as the
server does (``--client-consent aioice``: stock aiortc clients).

    .venv/bin/python bench/churn.py --participants 30 --minutes 10   # [--quick]

Not exercised here: switching tracks (the browser test ``tests/browser/test_twilio_tracks.py``
covers it) and browsers (the load generator is aiortc).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import mediadiag
from twilio_room import KEY, SECRET, Speaker

from mixer_ext.roomserver.consent import keep_consent

ROOM = "churn"
SERVER_SCRIPT = str(Path(__file__).resolve().parent / "twilio_room.py")
log = logging.getLogger("bench.churn")
#: the load generators' consent timing (``--client-consent``)
CLIENT_CONSENT = "rfc7675"


# --- a load-generator process ---------------------------------------------------------


class Participant(Speaker):
    """A ``Speaker`` that can mute, drop and notice what happens to it."""

    def __init__(self, url: str, identity: str, hz: float, *, subscribe: bool) -> None:
        super().__init__(url, ROOM, identity, hz, subscribe=subscribe)
        self.errors: list[str] = []
        self.enabled = True
        self._revision = 1

    async def start(self) -> None:
        self.pc.on("connectionstatechange", self._on_state)
        await super().start()
        reader = self._tasks[0]
        reader.add_done_callback(self._ended)

    def _on_state(self) -> None:
        log.info("%s: media connection %s", self.identity, self.pc.connectionState)
        if self.pc.connectionState == "connected" and CLIENT_CONSENT == "rfc7675":
            keep_consent(self.pc)  # as the room server does: a late answer is an answer

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self.errors.append(str(exc) if exc else "socket closed by the server")
        log.warning("%s: signaling ended: %s", self.identity, self.errors[-1])

    async def set_enabled(self, on: bool) -> None:
        self.enabled = on
        self._revision += 1
        track = {"id": self.track.id, "kind": "audio", "name": "mic", "enabled": on,
                 "priority": "standard"}  # fmt: skip
        update = {"type": "update", "version": 2, "session": self.session,
                  "participant": {"revision": self._revision, "tracks": [track]}}  # fmt: skip
        await self.ws.send(json.dumps({"type": "msg", "body": update}))

    async def drop(self) -> None:
        """The signaling socket goes away without ``bye`` (the peer connection is closed
        later, by the caller: closing it now would tell the server over DTLS)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    def frames(self) -> list[int]:
        return [tap.frames for tap in self.taps]


async def load_generator(url: str, diagnose: str | None, label: str, consent: str) -> None:
    """One load-generator process: JSON commands on stdin, one JSON answer each on stdout."""
    global CLIENT_CONSENT
    CLIENT_CONSENT = consent
    if not label.startswith("loadgen-l"):
        # the publishers' encoders are the bulk of the load: they yield to the process under
        # measurement (and to the machine's); a listener keeps its priority, or its socket,
        # 26 streams drained one datagram per loop iteration, overflows first
        os.nice(10)
    if diagnose:
        mediadiag.log_media(os.path.join(diagnose, f"{label}.log"), label)
    lag = mediadiag.LoopLag()
    lag.start()
    live: dict[str, Participant] = {}
    dropped: list[Participant] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            op, name = cmd["op"], cmd.get("name", "")
            answer: dict[str, Any] = {"ok": True}
            if op == "join":
                p = Participant(url, name, cmd["hz"], subscribe=cmd["subscribe"])
                await p.start()
                live[name] = p
            elif op == "mute":
                await live[name].set_enabled(cmd["on"])
            elif op == "drop":
                p = live.pop(name)
                await p.drop()
                dropped.append(p)
            elif op in ("leave", "discard"):
                await live.pop(name).stop()
            elif op == "status":
                answer = {
                    "errors": {n: p.errors for n, p in live.items() if p.errors},
                    "frames": {n: p.frames() for n, p in live.items() if p.subscribe},
                    "lag": lag.take(),
                    "udp_drops": mediadiag.udp_drops(os.getpid())[1],
                }
            elif op == "quit":
                break
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        for p in [*live.values(), *dropped]:
            with contextlib.suppress(Exception):
                await p.stop()
        await lag.stop()


class LoadGenerator:
    """The coordinator's handle on one load-generator process."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.proc: asyncio.subprocess.Process | None = None
        self.names: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self, url: str, diagnose: str | None, consent: str) -> None:
        args = [sys.executable, __file__, "--load-generator", url, "--label", self.label]
        args += ["--client-consent", consent]
        if diagnose:
            args += ["--diagnose", diagnose]
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(benchlib.ROOT)},
        )

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        async with self._lock:
            self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"load generator {self.label} ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def cpu(self) -> float:
        return benchlib.cpu_seconds(self.proc.pid) if self.proc else 0.0

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await self.call("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# --- the coordinator ---------------------------------------------------------------------


def connected(port: int) -> set[str]:
    auth = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    url = f"http://127.0.0.1:{port}/v1/Rooms/{ROOM}/Participants?Status=connected&PageSize=1000"
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no room: nobody in it
            return set()
        raise
    return {p["identity"] for p in body["participants"]}


class Crowd:
    """Who is live, where each participant runs, and what the load generators report."""

    def __init__(self, listener_gens: list[LoadGenerator], publisher_gens: list[LoadGenerator]):
        self.listener_gens, self.publisher_gens = listener_gens, publisher_gens
        self.gens = [*listener_gens, *publisher_gens]
        self.where: dict[str, LoadGenerator] = {}
        self.enabled: dict[str, bool] = {}
        self.listeners: set[str] = set()
        #: the load generators' worst loop lag (p99, max) since ``take_lag``
        self.lag = (0.0, 0.0)
        self._next = 0

    def take_lag(self) -> tuple[float, float]:
        lag, self.lag = self.lag, (0.0, 0.0)
        return lag

    async def join(self, name: str, hz: float, *, listener: bool, gen: LoadGenerator | None):
        if gen is None:
            gen = self.publisher_gens[self._next % len(self.publisher_gens)]
            self._next += 1
        await gen.call("join", name=name, hz=hz, subscribe=listener)
        self.where[name], self.enabled[name] = gen, True
        if listener:
            self.listeners.add(name)

    async def remove(self, name: str, op: str) -> None:
        gen = self.where.pop(name)
        self.enabled.pop(name)
        self.listeners.discard(name)
        await gen.call(op, name=name)

    async def status(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(g.call("status") for g in self.gens))
        out: dict[str, Any] = {"errors": {}, "frames": {}}
        out["udp_drops"] = sum(a["udp_drops"] for a in answers)
        for a in answers:
            out["errors"].update(a["errors"])
            out["frames"].update(a["frames"])
            if a["lag"]["max"] == a["lag"]["max"]:  # not nan: a window with samples
                self.lag = (max(self.lag[0], a["lag"]["p99"]), max(self.lag[1], a["lag"]["max"]))
        return out

    async def hears(self, window: float) -> list[str]:
        """Which listener does not receive from every other live, unmuted participant."""
        before = (await self.status())["frames"]
        await asyncio.sleep(window)
        after = (await self.status())["frames"]
        short = []
        for name in sorted(self.listeners):
            now, then = after.get(name, []), before.get(name, [])
            then = then + [0] * (len(now) - len(then))
            flowing = sum(1 for i, n in enumerate(now) if n > then[i])
            expected = sum(1 for other, on in self.enabled.items() if other != name and on)
            if flowing < expected:
                short.append(f"{name}: {flowing}/{expected}")
        return short


async def soak(args: argparse.Namespace) -> int:
    n, rng = args.participants, random.Random(args.seed)
    port = benchlib.free_port()
    env = {**os.environ, "PYTHONPATH": str(benchlib.ROOT)}
    if args.diagnose:
        os.makedirs(args.diagnose, exist_ok=True)
        env["BENCH_MEDIA_LOG"] = os.path.join(args.diagnose, "server.log")
    env["BENCH_SERVER_CONSENT"] = args.server_consent
    server = await asyncio.create_subprocess_exec(
        sys.executable, SERVER_SCRIPT, "--serve", str(port), stdout=subprocess.PIPE, env=env
    )
    url = f"ws://127.0.0.1:{port}/signaling"
    listener_gens = [LoadGenerator(f"loadgen-l{i}") for i in range(args.listeners)]
    publisher_gens = [LoadGenerator(f"loadgen-p{i}") for i in range(args.publisher_procs)]
    crowd = Crowd(listener_gens, publisher_gens)
    problems: list[str] = []
    counts = {"join": 0, "mute": 0, "unmute": 0, "drop": 0, "leave": 0}
    server_cpu: list[float] = []
    serial = 0
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)
        assert line.startswith(b"ready"), line
        await asyncio.gather(
            *(g.start(url, args.diagnose, args.client_consent) for g in crowd.gens)
        )
        print(f"load at start: {benchlib.load()}", flush=True)
        cpu0, t0 = benchlib.cpu_seconds(server.pid), time.monotonic()
        gen_cpu0 = {g.label: g.cpu() for g in crowd.gens}
        cpu_prev, t_prev = cpu0, 0.0
        end = t0 + 60 * args.minutes
        waves = 0
        for i, gen in enumerate(listener_gens):  # stay all along: they check the hearing
            await crowd.join(f"listener{i}", 1500.0 + 50 * i, listener=True, gen=gen)
        while time.monotonic() < end:
            waves += 1
            present = [name for name in crowd.where if name not in crowd.listeners]
            absent = n - len(crowd.where)
            joins = rng.randint(1, max(1, absent)) if absent else 0
            if len(crowd.where) < n // 2:
                joins = absent  # fill up: churn around a crowd, not an empty room
            joins = min(joins, args.max_joins)
            for _ in range(joins):
                serial += 1
                hz = 200.0 + 13 * (serial % 60)
                await crowd.join(f"p{serial}", hz, listener=False, gen=None)
                counts["join"] += 1
            for name in rng.sample(present, k=min(len(present), rng.randint(0, 4))):
                on = not crowd.enabled[name]
                await crowd.where[name].call("mute", name=name, on=on)
                crowd.enabled[name] = on
                counts["unmute" if on else "mute"] += 1
            leavers = rng.sample(present, k=min(len(present), rng.randint(0, 3)))
            for i, name in enumerate(leavers):
                op = "drop" if i % 2 else "leave"
                await crowd.remove(name, op)
                counts[op] += 1
            await asyncio.sleep(args.settle)
            # the server's reconnection window may keep a dropped socket's seat a while
            deadline = time.monotonic() + 40
            while True:
                listed = await asyncio.to_thread(connected, port)
                if listed == set(crowd.where):
                    break
                if time.monotonic() > deadline:
                    problems.append(
                        f"wave {waves}: REST lists {sorted(listed - set(crowd.where))} "
                        f"gone, misses {sorted(set(crowd.where) - listed)}"
                    )
                    break
                await asyncio.sleep(1.0)
            hurt = (await crowd.status())["errors"]
            if hurt:
                problems.append(f"wave {waves}: collateral disconnects {hurt}")
                for name in hurt:
                    gen, listener = crowd.where[name], name in crowd.listeners
                    await crowd.remove(name, "discard")
                    if listener:  # back, so that the hearing stays checked
                        await crowd.join(name, 1500.0, listener=True, gen=gen)
            for _ in range(3):  # a join's renegotiations may still be under way
                short = await crowd.hears(2.0)
                if not short:
                    break
            if short:
                problems.append(f"wave {waves}: not everyone heard: {short}")
            elapsed = time.monotonic() - t0
            cpu_now = benchlib.cpu_seconds(server.pid)
            server_cpu.append(100 * (cpu_now - cpu_prev) / (elapsed - t_prev))
            state = await crowd.status()
            lag_p99, lag_max = crowd.take_lag()
            print(
                f"wave {waves:3d} t={elapsed:5.0f}s live={len(crowd.where):2d} "
                f"muted={sum(1 for on in crowd.enabled.values() if not on)} "
                f"problems={len(problems)} server={server_cpu[-1]:.0f}% "
                f"loadgen lag p99={lag_p99:.2f}s max={lag_max:.2f}s "
                f"udp drops server={mediadiag.udp_drops(server.pid)[1]} "
                f"loadgen={state['udp_drops']} load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            cpu_prev, t_prev = cpu_now, elapsed
            await asyncio.sleep(max(0.0, args.wave - args.settle - 2.0))
        cpu1, t1 = benchlib.cpu_seconds(server.pid), time.monotonic()
        print(f"--- churn soak, {n} participants at most, {waves} waves over {t1 - t0:.0f} s")
        print("actions: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        print(
            f"room server CPU: {100.0 * (cpu1 - cpu0) / (t1 - t0):.1f} % of one core (mean); "
            f"per wave p50 {benchlib.percentile(server_cpu, 50):.1f} % "
            f"max {max(server_cpu, default=float('nan')):.1f} %"
        )
        gens = ", ".join(
            f"{g.label} {100.0 * (g.cpu() - gen_cpu0[g.label]) / (t1 - t0):.1f} %"
            for g in crowd.gens
        )
        print(f"load generators' CPU (% of one core): {gens}")
        print(f"problems: {len(problems)}")
        for problem in problems:
            print(f"  {problem}")
        print(f"load at end: {benchlib.load()}")
        return 1 if problems else 0
    finally:
        await asyncio.gather(*(g.stop() for g in crowd.gens), return_exceptions=True)
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 15)
        except TimeoutError:
            server.kill()
            await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=30)
    parser.add_argument(
        "--listeners", type=int, default=2, help="of them, subscribed to everyone all along"
    )
    parser.add_argument(
        "--publisher-procs", type=int, default=3, help="load-generator processes of publishers"
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--wave", type=float, default=12.0, help="seconds per wave")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds before checking")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--max-joins", type=int, default=8, help="joins per wave at most")
    parser.add_argument(
        "--diagnose", metavar="DIR", help="timestamped media-state logs of every process in DIR"
    )
    parser.add_argument(
        "--server-consent",
        choices=["rfc7675", "aioice"],
        default="rfc7675",
        help="the room server's consent timing: as built (RFC 7675) or stock aioice (before)",
    )
    parser.add_argument(
        "--client-consent",
        choices=["rfc7675", "aioice"],
        default="rfc7675",
        help="the aiortc clients' consent timing (browsers count late answers too)",
    )
    parser.add_argument("--quick", action="store_true", help="6 participants, 1 minute")
    parser.add_argument("--load-generator", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        asyncio.run(
            load_generator(args.load_generator, args.diagnose, args.label, args.client_consent)
        )
        return
    if args.quick:
        args.participants, args.listeners, args.publisher_procs, args.minutes = 6, 1, 1, 1.0
    print(f"machine: {benchlib.machine()}")
    print(f"consent: room server {args.server_consent}, clients {args.client_consent}")
    print("method: " + " ".join(__doc__.split("\n\n")[1].split()[1:]))
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
