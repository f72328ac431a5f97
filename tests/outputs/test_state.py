"""Issue 16.10: an output's state and counters have one owner.

The RTMP output's state is written by its output thread, its watchdog and the
reader of its child's heartbeats; its counters by those and the encoder thread.
Unit tests of that bookkeeping (no RTMP server: the child's heartbeats are
applied as the reader thread applies them, from several threads at once, with
the interpreter switching threads as often as it can so that a check-then-set
outside the lock shows up).  The real RTMP path is in tests/outputs/test_rtmp.py and
test_rtmp_boundary.py.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mixer_ext.encode.encoder import AacParams
from mixer_ext.outputs.base import OutputState
from mixer_ext.outputs.rtmp import RtmpOutput, _Child

PARAMS = AacParams(extradata=b"\x11\x90", bit_rate=64000)


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class _NoProcess:
    """Stands in for the child's Popen where only its identity matters (unit test)."""

    stdin = stdout = None
    returncode = 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def kill(self) -> None:
        pass


def _output() -> tuple[RtmpOutput, _Child]:
    out = RtmpOutput("rtmp://127.0.0.1:1/live/key", PARAMS, max_delay=1.0)
    child = _Child(_NoProcess())  # type: ignore[arg-type]
    out._child = child
    return out, child


@pytest.mark.parametrize("end", ["failed", "closed"])
def test_failed_and_closed_are_terminal_under_concurrent_heartbeats(end: str) -> None:
    for _ in range(300):
        out, child = _output()
        out._apply(child, {"state": "running"})
        stop = threading.Event()

        def heartbeats(out: RtmpOutput = out, child: _Child = child, stop: Any = stop) -> None:
            beat = 0
            while not stop.is_set():
                beat += 1
                state = "running" if beat % 2 else "reconnecting"
                out._apply(child, {"state": state, "bytes": beat})

        reader = threading.Thread(target=heartbeats)
        reader.start()
        if end == "failed":
            out._fail("disk on fire")
        else:
            out._finish(end_of_stream=False)
        for _ in range(200):  # the reader goes on a little after the end
            pass
        stop.set()
        reader.join()
        assert out.state is OutputState(end), f"a {end} output reports {out.state.value}"


def test_counters_lose_no_update_across_threads() -> None:
    out, _child = _output()
    n, threads = 20_000, 4

    def count() -> None:
        for _ in range(n):
            out._count_drop()
            out._count_bytes(2)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert out.dropped == n * threads
    assert out.bytes_written == 2 * n * threads


def test_the_state_has_one_setter() -> None:
    out, _child = _output()
    with pytest.raises(AttributeError):
        out.state = OutputState.RUNNING  # type: ignore[misc]
