"""Churn soak: twilio-protocol participants joining, muting, dropping and leaving in waves.

Method: the room server (with the twilio-video.js gateway) runs in its own process; this
process runs up to N aiortc participants speaking twilio-video.js's wire protocol
(``twilio_room.Speaker``: TCMP + v2 signaling, a tone each).
Every wave (``--wave`` seconds) picks, at random (seeded): some absent participants to join,
some present ones to mute or unmute (a participant state update, as ``track.disable()``
sends), some to **drop** (the socket closed without ``bye``, as a phone losing its network)
and some to **leave** (``bye``).  After each wave settles, it checks:

* **no ghost**: the Video REST's connected participants are exactly the live ones;
* **no collateral disconnect**: no participant that was not dropped or told to leave got an
  error or lost its socket;
* **everyone hears everyone**: each live participant receives packets on a stream from
  every other live, unmuted participant within the settle time.

``--listeners`` of the N (4) stay all along subscribed to everyone; the others publish
only (``automaticSubscription: false``): everyone subscribed to everyone would be N*(N-1)
forwarded streams, more than two shared cores carry at 30 (``twilio_room.py`` measures
0.4 % of a core per stream).  The room server's CPU (utime+stime of its process, from
/proc) is sampled over the run.

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
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from twilio_room import KEY, SECRET, Speaker

ROOM = "churn"
SERVER_SCRIPT = str(Path(__file__).resolve().parent / "twilio_room.py")


class Participant(Speaker):
    """A ``Speaker`` that can mute, drop and notice what happens to it."""

    def __init__(self, url: str, identity: str, hz: float, *, subscribe: bool) -> None:
        super().__init__(url, ROOM, identity, hz, subscribe=subscribe)
        self.errors: list[str] = []
        self.enabled = True
        self._revision = 1

    async def start(self) -> None:
        await super().start()
        reader = self._tasks[0]
        reader.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self.errors.append(str(exc) if exc else "socket closed by the server")

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


async def hears(live: dict[str, Participant], window: float) -> list[str]:
    """Which listener does not receive from every other live, unmuted participant."""
    before = {name: p.frames() for name, p in live.items()}
    await asyncio.sleep(window)
    short = []
    for name, p in live.items():
        if not p.subscribe:
            continue
        after = p.frames()
        flowing = sum(1 for i, n in enumerate(after) if n > (before[name] + [0] * len(after))[i])
        expected = sum(1 for other, q in live.items() if other != name and q.enabled)
        if flowing < expected:
            short.append(f"{name}: {flowing}/{expected}")
    return short


async def soak(
    n: int, listeners: int, minutes: float, wave: float, settle: float, seed: int, max_joins: int
) -> int:
    rng = random.Random(seed)
    port = benchlib.free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        SERVER_SCRIPT,
        "--serve",
        str(port),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(benchlib.ROOT)},
    )
    live: dict[str, Participant] = {}
    dropped: list[Participant] = []
    problems: list[str] = []
    counts = {"join": 0, "mute": 0, "unmute": 0, "drop": 0, "leave": 0}
    url = f"ws://127.0.0.1:{port}/signaling"
    serial = 0
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)
        assert line.startswith(b"ready"), line
        cpu0, t0 = benchlib.cpu_seconds(server.pid), time.monotonic()
        end = t0 + 60 * minutes
        waves = 0
        for i in range(listeners):  # stay all along: they check that everyone is heard
            name = f"listener{i}"
            live[name] = Participant(url, name, 1500.0 + 50 * i, subscribe=True)
            await live[name].start()
        while time.monotonic() < end:
            waves += 1
            present = [name for name, p in live.items() if not p.subscribe]
            absent = n - len(live)
            joins = rng.randint(1, max(1, absent)) if absent else 0
            if len(live) < n // 2:
                joins = absent  # fill up: churn around a crowd, not an empty room
            joins = min(joins, max_joins)
            for _ in range(joins):
                serial += 1
                name = f"p{serial}"
                p = Participant(url, name, 200.0 + 13 * (serial % 60), subscribe=False)
                await p.start()
                live[name] = p
                counts["join"] += 1
            for name in rng.sample(present, k=min(len(present), rng.randint(0, 4))):
                p = live[name]
                await p.set_enabled(not p.enabled)
                counts["unmute" if p.enabled else "mute"] += 1
            leavers = rng.sample(present, k=min(len(present), rng.randint(0, 3)))
            for i, name in enumerate(leavers):
                p = live.pop(name)
                if i % 2:
                    await p.drop()
                    dropped.append(p)
                    counts["drop"] += 1
                else:
                    await p.stop()
                    counts["leave"] += 1
            await asyncio.sleep(settle)
            # the server's reconnection window may keep a dropped socket's seat a while
            deadline = time.monotonic() + 40
            while True:
                listed = await asyncio.to_thread(connected, port)
                if listed == set(live):
                    break
                if time.monotonic() > deadline:
                    problems.append(
                        f"wave {waves}: REST lists {sorted(listed - set(live))} "
                        f"gone, misses {sorted(set(live) - listed)}"
                    )
                    break
                await asyncio.sleep(1.0)
            hurt = [f"{name}: {p.errors}" for name, p in live.items() if p.errors]
            if hurt:
                problems.append(f"wave {waves}: collateral disconnects {hurt}")
                for name in [name for name, p in live.items() if p.errors]:
                    await live.pop(name).stop()
                    if name.startswith("listener"):  # back, so that hearing stays checked
                        live[name] = Participant(url, name, 1500.0, subscribe=True)
                        await live[name].start()
            for _ in range(3):  # a join's renegotiations may still be under way
                short = await hears(live, 2.0)
                if not short:
                    break
            if short:
                problems.append(f"wave {waves}: not everyone heard: {short}")
            elapsed = time.monotonic() - t0
            print(
                f"wave {waves:3d} t={elapsed:5.0f}s live={len(live):2d} "
                f"muted={sum(1 for p in live.values() if not p.enabled)} "
                f"problems={len(problems)}",
                flush=True,
            )
            await asyncio.sleep(max(0.0, wave - settle - 2.0))
        cpu1, t1 = benchlib.cpu_seconds(server.pid), time.monotonic()
        print(f"--- churn soak, {n} participants at most, {waves} waves over {t1 - t0:.0f} s")
        print("actions: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        print(f"room server CPU: {100.0 * (cpu1 - cpu0) / (t1 - t0):.1f} % of one core (mean)")
        print(f"problems: {len(problems)}")
        for problem in problems:
            print(f"  {problem}")
        print(f"load: {benchlib.load()}")
        return 1 if problems else 0
    finally:
        for p in [*live.values(), *dropped]:
            await p.stop()
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
        "--listeners", type=int, default=4, help="of them, subscribed to everyone all along"
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--wave", type=float, default=12.0, help="seconds per wave")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds before checking")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--max-joins", type=int, default=8, help="joins per wave at most")
    parser.add_argument("--quick", action="store_true", help="6 participants, 1 minute")
    args = parser.parse_args()
    if args.quick:
        args.participants, args.listeners, args.minutes = 6, 2, 1.0
    print(benchlib.machine())
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    code = asyncio.run(
        soak(
            args.participants,
            args.listeners,
            args.minutes,
            args.wave,
            args.settle,
            args.seed,
            args.max_joins,
        )
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
