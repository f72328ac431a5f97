"""Why a media connection closed: loop lag and aiortc/aioice state changes, timestamped.

For the soak benchmarks (``churn.py``), in every process they run (the room server and each
load-generator process):

* ``LoopLag``: a task that sleeps 50 ms and records how late it wakes up (the event loop's
  lag: how long a STUN response, a DTLS record or an RTP packet waits before it is handled);
  ``take()`` hands the figures since the last call.
* ``log_media(path, label)``: a wall-clock timestamped log file (the processes share the
  machine's clock, so their files line up) with aioice's INFO lines ("Consent to send
  expired", checks), aiortc's state changes (ICE, DTLS, connectionState; no SDP), the room
  server's own warnings, and one line per **failed consent check** (aioice keeps no record
  of them), with the pair.  A check is one STUN request given 0.5 s with aioice's own timing
  (six failed in a row close the connection), four tries answered until 7.5 s with
  ``mixer_ext.roomserver.consent``'s RFC 7675 timing (30 s without an answer close it);
  answers that came after 0.5 s, which aioice's own check counts as none, are counted apart.
* ``udp_drops(pid)``: the datagrams the kernel dropped at a process's full socket buffers.

Diagnostics only: the consent-check wrapper times aioice's ``StunProtocol.request`` when it
is called with a retransmission count (consent checks; connectivity checks pass none) and
changes nothing it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

import benchlib

PERIOD = 0.050
#: consent checks of this process (``log_media`` counts them)
CONSENT = {"ok": 0, "late": 0, "failed": 0}


@dataclass
class LoopLag:
    """How late a 50 ms sleep wakes up, in seconds (one sample per wake-up)."""

    samples: list[float] = field(default_factory=list)
    worst: float = 0.0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-looplag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(PERIOD)
            lag = max(0.0, loop.time() - t0 - PERIOD)
            self.samples.append(lag)
            self.worst = max(self.worst, lag)
            if lag > 0.5:
                logging.getLogger("bench.looplag").warning("loop lag %.2f s", lag)

    def take(self) -> dict[str, float]:
        """p50/p99/max lag (s) and the share of wake-ups later than 0.5 s, since last call."""
        xs, self.samples = self.samples, []
        return {
            "p50": benchlib.percentile(xs, 50),
            "p99": benchlib.percentile(xs, 99),
            "max": max(xs, default=float("nan")),
            "over_0.5": sum(1 for x in xs if x > 0.5) / len(xs) if xs else float("nan"),
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class _NoSdp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return "Description(" not in msg and "RTP parsing" not in msg


def log_media(path: str, label: str) -> None:
    """Timestamped media-state log of this process into ``path`` (appended)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s.%(msecs)03d {label} %(name)s %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
        )
    )
    handler.addFilter(_NoSdp())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name, level in (
        ("aioice.ice", logging.INFO),
        ("aiortc.rtcpeerconnection", logging.DEBUG),
        ("aiortc.rtcdtlstransport", logging.DEBUG),
        ("aiortc.rtcicetransport", logging.DEBUG),
        ("mixer_ext", logging.INFO),
        ("bench", logging.INFO),
    ):
        logging.getLogger(name).setLevel(level)
    _time_consent_checks()


def _time_consent_checks() -> None:
    from aioice import ice, stun

    original = ice.StunProtocol.request
    if getattr(original, "_bench_timed", False):
        return
    log = logging.getLogger("bench.consent")

    async def request(self, request, addr, integrity_key=None, retransmissions=None):  # type: ignore[no-untyped-def]
        if retransmissions is None:  # connectivity checks, not consent (0: aioice, 3: ours)
            return await original(self, request, addr, integrity_key, retransmissions)
        t0 = time.monotonic()
        try:
            answer = await original(self, request, addr, integrity_key, retransmissions)
            CONSENT["ok"] += 1
            if time.monotonic() - t0 > 0.5:  # aioice's own check would have counted none
                CONSENT["late"] += 1
            return answer
        except stun.TransactionError as exc:
            CONSENT["failed"] += 1
            log.warning(
                "consent check to %s failed after %.2f s: %s",
                addr,
                time.monotonic() - t0,
                exc,
            )
            raise

    request._bench_timed = True  # type: ignore[attr-defined]
    ice.StunProtocol.request = request  # type: ignore[method-assign]


async def report_lag(lag: LoopLag, every: float = 10.0) -> None:
    """Log ``lag``'s figures every ``every`` seconds (a task of the process under study)."""
    log = logging.getLogger("bench.looplag")
    while True:
        await asyncio.sleep(every)
        f = lag.take()
        log.info(
            "loop lag p50 %.3f p99 %.3f max %.3f s, %.1f %% of wake-ups > 0.5 s; "
            "consent checks ok %d (of which answered after 0.5 s: %d) failed %d; udp drops %d",
            f["p50"],
            f["p99"],
            f["max"],
            100 * f["over_0.5"],
            CONSENT["ok"],
            CONSENT["late"],
            CONSENT["failed"],
            udp_drops(os.getpid())[1],
        )


def udp_drops(pid: int) -> tuple[int, int]:
    """(sockets, datagrams dropped) over the UDP sockets process ``pid`` holds open.

    The kernel counts, per socket, the datagrams it dropped because the socket's receive
    buffer was full (the ``drops`` column of /proc/net/udp{,6}): what a process that reads
    too slowly loses, STUN consent checks included.
    """
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    sockets = dropped = 0
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[9] in inodes:
                    sockets += 1
                    dropped += int(cols[-1])
    return sockets, dropped
