"""Owning tasks: stopping never swallows the caller's own cancellation.

Three levels: ``mixer_ext.tasks`` itself; a guard over the package's source, so the
``suppress(CancelledError)``-around-an-await idiom cannot come back; and the shutdown it
broke: SIGTERM landing while the worker waits for a leaving participant's reader to stop.
That last one is a unit test of the code around the connector (the connector is a script,
the track a stubborn fake); the mixer clock, the encoder and the recording are real.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av

from mixer_ext import tasks
from mixer_ext.connectors.base import (
    Disconnected,
    ParticipantJoined,
    ParticipantLeft,
    Reason,
    RoomConnector,
    RoomEvent,
    TrackSubscribed,
)
from mixer_ext.context import ExtensionContext
from mixer_ext.settings import Settings
from mixer_ext.worker import runner as worker_mod

PACKAGE = Path(__file__).resolve().parent.parent / "mixer_ext"


async def _stubborn(release: float) -> None:
    """A task that takes ``release`` seconds to honour a cancel (a slow teardown)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(release)
        raise


async def test_stop_tasks_lets_the_callers_cancellation_through() -> None:
    slow = asyncio.create_task(_stubborn(1.0), name="slow")
    stopper = asyncio.create_task(tasks.stop_tasks([slow], 5.0), name="stopper")
    await asyncio.sleep(0.05)  # stopper is now waiting for `slow` to finish cancelling
    stopper.cancel()
    t0 = time.monotonic()
    done, _ = await asyncio.wait({stopper}, timeout=0.5)
    assert done, "the stopper was cancelled but kept waiting"
    assert stopper.cancelled(), "the stopper swallowed its own cancellation"
    assert time.monotonic() - t0 < 0.5
    await asyncio.wait({slow}, timeout=2)
    assert slow.cancelled()


async def test_stop_tasks_is_bounded_and_reports_the_late_ones() -> None:
    slow = asyncio.create_task(_stubborn(0.6), name="slow")
    quick = asyncio.create_task(asyncio.sleep(3600), name="quick")
    await asyncio.sleep(0)
    t0 = time.monotonic()
    assert await tasks.stop_tasks([slow, quick, None], 0.1) is False
    assert time.monotonic() - t0 < 0.4
    assert quick.cancelled()
    assert await tasks.stop_tasks([slow], 2.0) is True


# ---------------------------------------------------------------------- the guard
def _names(node: ast.expr) -> list[str]:
    elts = node.elts if isinstance(node, ast.Tuple) else [node]
    out = []
    for e in elts:
        if isinstance(e, ast.Attribute):
            out.append(e.attr)
        elif isinstance(e, ast.Name):
            out.append(e.id)
    return out


def _swallowers(tree: ast.AST) -> list[int]:
    """Lines where a CancelledError is suppressed around an await, or caught without a raise."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and _names(call.func) == ["suppress"]
                    and any("CancelledError" in _names(a) for a in call.args)
                    and any(isinstance(n, ast.Await) for b in node.body for n in ast.walk(b))
                ):
                    bad.append(node.lineno)
        if (
            isinstance(node, ast.ExceptHandler)
            and node.type is not None
            and "CancelledError" in _names(node.type)
            and not any(isinstance(n, ast.Raise) for b in node.body for n in ast.walk(b))
        ):
            bad.append(node.lineno)
    return bad


async def test_current_task_in_keeps_a_handler_only_while_it_runs() -> None:
    """A server's shutdown stops the handlers in its set: the running one is there while
    it runs, and gone once it returns or raises (a stale one would be cancelled later)."""
    handlers: set[asyncio.Task[object]] = set()
    seen: list[bool] = []

    async def handler(fail: bool) -> None:
        with tasks.current_task_in(handlers):
            seen.append(asyncio.current_task() in handlers)
            await asyncio.sleep(0)
            if fail:
                raise ValueError("handler failed")

    await asyncio.create_task(handler(False))
    with contextlib.suppress(ValueError):
        await asyncio.create_task(handler(True))
    assert seen == [True, True]
    assert handlers == set()


def test_the_guard_sees_the_idiom() -> None:
    swallow = (
        "async def f(t):\n    with contextlib.suppress(asyncio.CancelledError):\n        await t\n"
    )
    passes = "async def f(t):\n    try:\n        await t\n    except asyncio.CancelledError:\n"
    assert _swallowers(ast.parse(swallow)) == [2]
    assert _swallowers(ast.parse(passes + "        pass\n")) == [4]
    assert _swallowers(ast.parse(passes + "        raise\n")) == []


def test_no_module_swallows_cancellation() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line in _swallowers(ast.parse(path.read_text(), str(path))):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not found, (
        "cancellation swallowed (use mixer_ext.tasks.stop_tasks / wait_bounded): "
        + ", ".join(found)
    )


# ---------------------------------------------------------------------- the shutdown
class StubbornTrack:
    """An audio track whose reader takes a while to stop (cancel lands in recv())."""

    kind = "audio"

    def __init__(self, release: float) -> None:
        self.release = release

    async def recv(self) -> av.AudioFrame:
        await _stubborn(self.release)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        pass


class LeaveThenSilence(RoomConnector):
    """alice joins with a stubborn track, leaves, then the room goes quiet for good."""

    def __init__(self, leaving: asyncio.Event) -> None:
        super().__init__("RM", "audio-mixer-v1")
        self.leaving = leaving

    async def connect(self) -> None:
        pass

    async def events(self) -> AsyncIterator[RoomEvent]:
        yield ParticipantJoined("alice")
        yield TrackSubscribed("alice", "MT1", StubbornTrack(release=1.5), True)  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        self.leaving.set()
        yield ParticipantLeft("alice", "left")
        await asyncio.sleep(3600)  # no further room event: only a stop can end the run
        yield Disconnected(Reason.LEFT)

    async def disconnect(self) -> None:
        pass


async def test_sigterm_during_a_participants_leave_ends_the_run(tmp_path: Path) -> None:
    leaving = asyncio.Event()
    ctx = ExtensionContext.model_validate(
        {"room": {"name": "RM"}, "outputs": [f"file:{tmp_path / 'rec.ts'}"]}
    )
    worker = worker_mod.Worker(
        ctx, Settings(http_linger=0), connector_factory=lambda *_: LeaveThenSilence(leaving)
    )
    run = asyncio.create_task(worker.run(), name="worker-run")
    await asyncio.wait_for(leaving.wait(), 10)
    await asyncio.sleep(0.2)  # the pump is now waiting for alice's reader to stop
    worker.request_stop()
    t0 = time.monotonic()
    done, _ = await asyncio.wait({run}, timeout=8)
    assert done, "the worker did not end after SIGTERM: its pump swallowed the cancellation"
    assert run.result() == 0
    assert time.monotonic() - t0 < 5
    assert (tmp_path / "rec.ts").stat().st_size > 0
