"""A burst of joins into a Janus room: the connector's longest loop block, this checkout vs before.

Method: one Debian Janus on the interface address; for each row a fresh room and a
fresh process holding only the Janus connector (``JanusRoomConnector``, the worker's
stage 1) and a 20 ms probe on the same event loop (the mixer clock's cadence: how
late each probe wakes is how late a tick would run).  When the connector is in the
room, this (parent) process adds N Janus *remote publishers* at once
(``mixer_ext.sim.janus_remote``: 10 % talking a tone, the rest silent as Opus DTX
is), from its own process so the load generator does not share the measured loop.
The row reports the time until every stream is subscribed, the renegotiations it
took, the longest loop block and the probe ticks later than 20 / 50 ms during the
burst (from the first add to every stream subscribed, plus 2 s), and whether the
connector lost the room.  The "before" row runs the connector of ``--before``
(``git archive`` into .cache/) with this checkout's load generator.

    .venv/bin/python bench/join_burst.py --steps 100,250 --before 1b764d4

``JOIN_BURST_SLOW_MS=10`` lists, in each row's log (``$TMPDIR/join-burst-ROOM.log``),
every loop callback that used more than that much of the loop thread's CPU (not wall
time: on a shared machine that includes time the process was not scheduled), by kind
and the worst ones, and the garbage collector's passes over it: where the blocks come
from.  The row freezes its startup heap as ``mixer-ext run`` does
(``JOIN_BURST_NO_GC_FREEZE=1``: not).  ``--only-this`` skips the "before" rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOM0 = 5000
SCRIPT = str(Path(__file__).resolve())
#: seconds the burst may take to be fully subscribed before the row counts as failed
SUBSCRIBE_WITHIN = 60.0


async def row(url: str, room: int, n: int) -> None:
    """The measured process: connector + probe; prints one JSON line when done."""
    from mixer_ext import metrics
    from mixer_ext.connectors.base import Disconnected, TrackSubscribed
    from mixer_ext.connectors.janus import JanusRoomConnector

    slow_ms = os.environ.get("JOIN_BURST_SLOW_MS")
    slow = _measure_callbacks(float(slow_ms) / 1000) if slow_ms else None
    conn = JanusRoomConnector(url, str(room), "audio-mixer-v1")
    await conn.connect()
    if not os.environ.get("JOIN_BURST_NO_GC_FREEZE"):  # as `mixer-ext run` does now
        import gc  # (inline: the "before" checkout has no eventloop.freeze_startup_heap)

        gc.collect()
        gc.freeze()
    subscribed = 0
    lost: str | None = None
    done = asyncio.Event()
    lags: list[tuple[float, float]] = []

    async def consume() -> None:
        nonlocal subscribed, lost
        async for ev in conn.events():
            if isinstance(ev, TrackSubscribed):
                subscribed += 1
            elif isinstance(ev, Disconnected):
                lost = ev.reason
            if subscribed >= n or lost is not None:
                done.set()

    async def probe() -> None:
        due = time.monotonic()
        while True:
            due += 0.02
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            lags.append((now, now - due))
            if now - due > 0.02:
                due = now  # a blocked loop: measure the next tick from now, not the backlog

    tasks = [
        asyncio.create_task(consume(), name="bench-consume"),
        asyncio.create_task(probe(), name="bench-probe"),
    ]
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent starts the burst
    t0 = time.monotonic()
    reneg0 = metrics.JANUS_RENEGOTIATIONS._value.get()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), SUBSCRIBE_WITHIN)
    t_all = time.monotonic() - t0
    if subscribed < n:  # say what is missing (the row's stderr)
        state = {k: v for k, v in vars(conn).items() if k in ("_wanted", "_flush_timer")}
        pubs = {f: p.audio_mids for f, p in getattr(conn, "_publishers", {}).items()}
        subs = {(s.feed_id, s.feed_mid) for s in getattr(conn, "_subs", {}).values()}
        missing = {f: m for f, m in pubs.items() if not any((f, x) in subs for x in m)}
        names = {p.identity for p in getattr(conn, "_publishers", {}).values()}
        missing["never announced"] = sorted({f"p{i:03d}" for i in range(n)} - names)
        print(f"missing: {missing} state: {state} pubs: {len(pubs)}", file=sys.stderr)
    await asyncio.sleep(2.0)
    window = [lag for when, lag in lags if when >= t0]
    out: dict[str, Any] = {
        "subscribed": subscribed,
        "seconds": t_all,
        "renegotiations": metrics.JANUS_RENEGOTIATIONS._value.get() - reneg0,
        "max_block_ms": 1000 * max(window, default=0.0),
        "late20": sum(lag > 0.02 for lag in window),
        "late50": sum(lag > 0.05 for lag in window),
        "ticks": len(window),
        "lost": lost,
    }
    if slow is not None:
        _report_callbacks(slow)
    print(json.dumps(out), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await conn.disconnect()


def _measure_callbacks(threshold: float) -> list[tuple[float, float, str]]:
    """Record every loop callback that used more than ``threshold`` s of this thread's CPU.

    CPU time (``time.thread_time``), not wall time: on a loaded machine a callback's wall
    time includes the time the process was not scheduled at all.  Returns the list the
    wrapped ``Handle._run`` appends (cpu s, wall s, what) to.
    """
    import asyncio.events

    slow: list[tuple[float, float, str]] = []
    run = asyncio.events.Handle._run

    def _run(handle: asyncio.events.Handle) -> None:
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        run(handle)
        cpu = time.thread_time() - cpu0
        if cpu > threshold:
            slow.append((cpu, time.perf_counter() - wall0, _describe(handle)))

    asyncio.events.Handle._run = _run  # type: ignore[method-assign]

    import gc  # the garbage collector's passes over the threshold, as "gc generation N"

    started: list[float] = []

    def _gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.thread_time(), time.perf_counter()]
        elif started and time.thread_time() - started[0] > threshold:
            cpu, wall = time.thread_time() - started[0], time.perf_counter() - started[1]
            slow.append((cpu, wall, f"gc generation {info.get('generation')}"))

    gc.callbacks.append(_gc)
    return slow


def _describe(handle: asyncio.events.Handle) -> str:
    """A task step as ``coroutine @ where it stopped``, any other callback by its name."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        name = str(getattr(coro, "__qualname__", coro))
        frames = []  # down the chain of awaits to where the step stopped
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            code = coro.cr_frame.f_code
            frames.append(f"{code.co_name}:{coro.cr_frame.f_lineno}")
            coro = getattr(coro, "cr_await", None)
        return f"{name} @ {' > '.join(frames[1:4])}" if len(frames) > 1 else name
    return str(getattr(callback, "__qualname__", callback))


def _report_callbacks(slow: list[tuple[float, float, str]]) -> None:
    """The row's stderr: the slow callbacks by kind (count, total, max CPU) and the worst."""
    kinds: dict[str, list[float]] = {}
    for cpu, _, what in slow:
        kinds.setdefault(what, []).append(cpu)
    print(f"callbacks over the threshold: {len(slow)}", file=sys.stderr)
    for what, cpus in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"  {len(cpus):>4} x  total {1000 * sum(cpus):7.1f} ms  max {1000 * max(cpus):6.1f}"
            f" ms  {what}",
            file=sys.stderr,
        )
    for cpu, wall, what in sorted(slow, reverse=True)[:15]:
        print(f"  cpu {1000 * cpu:6.1f} ms wall {1000 * wall:6.1f} ms  {what}", file=sys.stderr)


async def burst(url: str, room: int, n: int, pythonpath: Path) -> dict[str, Any]:
    from mixer_ext.sim.janus_remote import RemotePublishers
    from mixer_ext.sim.preencoded import encode_tone
    from mixer_ext.testing.janus import ROOM_SECRET, interface_address

    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    # the row's stderr (its log, and what is missing if the burst never completes)
    stderr = open(f"{tempfile.gettempdir()}/join-burst-{room}.log", "wb")  # noqa: ASYNC230, SIM115
    wrap = [os.environ["JOIN_BURST_WRAP"]] if "JOIN_BURST_WRAP" in os.environ else []
    cmd = [sys.executable, *wrap, SCRIPT, "--row", url, str(room), str(n)]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=str(pythonpath),
    )
    assert proc.stdin is not None and proc.stdout is not None
    remote = RemotePublishers(url, room, ROOM_SECRET)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            return {"error": f"row did not start: {line!r}"}
        await remote.open()
        host = interface_address()
        tone = encode_tone(440.0, 0.1)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        await asyncio.gather(
            *(remote.add(f"p{i:03d}", tone, host, dtx=i % 10 != 0) for i in range(n))
        )
        remote.start()
        line = await asyncio.wait_for(proc.stdout.readline(), SUBSCRIBE_WITHIN + 30)
        return dict(json.loads(line)) if line else {"error": "row exited early"}
    finally:
        await remote.close()
        await asyncio.wait_for(proc.wait(), 30)
        stderr.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="100,250", help="N joining at once (100,250)")
    parser.add_argument("--before", default="1b764d4", help="revision of the 'before' rows")
    parser.add_argument("--only-this", action="store_true", help="no 'before' rows")
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:  # not benchlib: it puts this checkout first on sys.path
        asyncio.run(row(args.row[0], int(args.row[1]), int(args.row[2])))
        return 0
    import benchlib
    from capacity import before_checkout

    from mixer_ext.testing.janus import room_config, start_janus, stop_janus

    steps = [int(s) for s in args.steps.split(",")]
    before = benchlib.ROOT
    if not args.only_this:
        before = before_checkout(args.before)
        # the load generator is this checkout's (DTX talkers) in both rows
        (before / "mixer_ext/sim/janus_remote.py").write_bytes(
            (benchlib.ROOT / "mixer_ext/sim/janus_remote.py").read_bytes()
        )
    print(f"machine: {benchlib.machine()}")
    print(f"start: {benchlib.load()}")
    print(__doc__.split("\n\n")[1].replace("\n", "\n        "))
    rows = [
        (n, name, path)
        for n in steps
        for name, path in (("this", benchlib.ROOT), (f"before {args.before}", before))
        if name == "this" or not args.only_this
    ]
    rooms = "".join(room_config(ROOM0 + i, publishers=n + 10) for i, (n, _, _) in enumerate(rows))
    janus = start_janus(Path(tempfile.mkdtemp(prefix="join-burst-")), rooms=rooms)
    print(
        f"{'N':>4} {'connector':<16} {'subscribed':>10} {'in s':>6} {'reneg':>6} "
        f"{'max block':>10} {'>20ms':>6} {'>50ms':>6} {'room':>6}  load"
    )
    try:
        for i, (n, name, path) in enumerate(rows):
            r = asyncio.run(burst(janus.url, ROOM0 + i, n, path))
            if "error" in r:
                print(f"{n:>4} {name:<16} FAILED: {r['error']}  {benchlib.load()}")
                continue
            print(
                f"{n:>4} {name:<16} {r['subscribed']:>6}/{n:<3} {r['seconds']:>6.2f} "
                f"{r['renegotiations']:>6.0f} {r['max_block_ms']:>8.0f}ms "
                f"{r['late20']:>6} {r['late50']:>6} {'LOST' if r['lost'] else 'kept':>6}  "
                f"{benchlib.load()}",
                flush=True,
            )
    finally:
        stop_janus(janus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
