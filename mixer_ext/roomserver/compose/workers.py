"""Compositions run in worker processes, at most ``MIXER_COMPOSITION_WORKERS`` at once.

``CompositionWorkers.run(job, on_progress)`` waits for a free slot (the composition is
``enqueued`` meanwhile; the wait is the queue, bounded by the REST resource's own limit),
starts one process (``spawn``: nothing of the server's loop, threads or sockets is
inherited), and reads its messages through a pipe with ``loop.add_reader`` (no thread):
``("progress", fraction)`` and finally ``("done", CompositionResult)`` or
``("failed", reason)``.  Cancelling ``run`` (a deleted composition, the server
stopping) kills the process and waits for it; a worker whose server dies (also by
SIGKILL) is killed too (Linux ``PR_SET_PDEATHSIG``), so the restarted server's new run is
the only writer.  The mix itself is ``engine.compose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from mixer_ext.roomserver.compose.engine import CompositionResult, compose
from mixer_ext.roomserver.compose.spec import CompositionJob

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: progress messages are sent at most every this fraction of the work
PROGRESS_STEP = 0.05


class CompositionFailed(RuntimeError):
    """The worker could not make the composition (a one-line reason)."""


class CompositionRunner(Protocol):
    """Where compositions run, as ``MediaService`` sees it: ``run`` waits for a slot
    (calling ``on_started`` when the work starts), reports ``on_progress(fraction)`` and
    returns the result or raises ``CompositionFailed``; cancelling it stops the work.

    ``CompositionWorkers`` (below) runs each in a local process;
    ``kube.KubeCompositionJobs`` runs ``mixer-ext compose`` (``compose/cli.py``) on a job
    encoded by ``spec.encode_job`` as a Kubernetes Job mounting the same storage.
    ``close()`` says the server is stopping (before it cancels the runs): a local worker
    dies with its run; a Job is left to finish, and the restarted server follows it."""

    async def run(
        self,
        job: CompositionJob,
        on_progress: Callable[[float], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> CompositionResult: ...

    def close(self) -> None: ...


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the server that started it dies (also by
    SIGKILL), so a restarted server's new run of the composition is the only one."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the orphan finishes on its own
        return


def _worker(job: CompositionJob, conn: Connection, parent: int) -> None:
    """The worker process's body: compose, reporting through ``conn``."""
    _die_with_parent()
    if os.getppid() != parent:  # the server died before the line above took effect
        return
    last = [0.0]

    def progress(fraction: float) -> None:
        if fraction - last[0] >= PROGRESS_STEP or fraction >= 1.0:
            last[0] = fraction
            conn.send(("progress", fraction))

    try:
        result = compose(job, progress)
    except Exception as exc:  # the process's top level: report, exit
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("done", result))
    finally:
        conn.close()


class BoundedRunner:
    """The part every ``CompositionRunner`` shares: at most ``limit`` compositions run at
    once (the others wait, ``enqueued``), ``running`` counts those that do; a subclass
    says how one runs (``_run_one``)."""

    def __init__(self, limit: int, name: str) -> None:
        if limit < 1:
            raise ValueError(f"{name} must be at least 1")
        self._slots = asyncio.Semaphore(limit)
        self.running = 0

    async def run(
        self,
        job: CompositionJob,
        on_progress: Callable[[float], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> CompositionResult:
        async with self._slots:
            if on_started is not None:
                on_started()
            self.running += 1
            try:
                return await self._run_one(job, on_progress)
            finally:
                self.running -= 1

    async def _run_one(
        self, job: CompositionJob, on_progress: Callable[[float], None] | None
    ) -> CompositionResult:
        raise NotImplementedError


class CompositionWorkers(BoundedRunner):
    """A bounded pool of composition processes (one process per composition)."""

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__(max_workers, "max_workers")
        self.max_workers = max_workers
        self._ctx = multiprocessing.get_context("spawn")

    def close(self) -> None:
        """Nothing to do: cancelling a run kills its process."""

    async def _run_one(
        self, job: CompositionJob, on_progress: Callable[[float], None] | None
    ) -> CompositionResult:
        loop = asyncio.get_running_loop()
        ours, theirs = self._ctx.Pipe(duplex=False)
        proc: Any = self._ctx.Process(
            target=_worker,
            args=(job, theirs, os.getpid()),
            name=f"compose {job.output.name}",
            daemon=True,
        )
        proc.start()
        theirs.close()
        messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=64)

        def readable() -> None:
            try:
                msg = ours.recv()
            except (EOFError, OSError):
                msg = ("eof", None)
                loop.remove_reader(ours.fileno())
            if msg[0] == "progress" and messages.full():
                return  # progress is only a hint: drop it rather than grow
            messages.put_nowait(msg)

        loop.add_reader(ours.fileno(), readable)
        try:
            while True:
                kind, value = await messages.get()
                if kind == "progress":
                    if on_progress is not None:
                        on_progress(float(value))
                elif kind == "done":
                    assert isinstance(value, CompositionResult)
                    return value
                elif kind == "failed":
                    raise CompositionFailed(str(value))
                else:
                    raise CompositionFailed("the composition worker exited without a result")
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(ours.fileno())
            ours.close()
            if proc.is_alive():
                proc.kill()
            await asyncio.to_thread(proc.join, 10)
