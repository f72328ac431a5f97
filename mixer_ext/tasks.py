"""One way to start, keep, stop and await asyncio tasks.

Every task the package starts has a name and an owner that keeps a reference to it (an
unreferenced task can be garbage-collected mid-flight).  Stopping cancels, then waits at
most a timeout for the tasks to exit, and logs the ones that did not.

The contract that matters most: **stopping never swallows the caller's own cancellation.**
The usual idiom ``task.cancel(); with suppress(CancelledError): await task`` cannot tell
"the task I cancelled finished cancelling" from "I was cancelled while waiting for it", so
a caller cancelled during a stop (the worker, when SIGTERM or the deadline lands while a
participant is leaving) silently carries on.  ``asyncio.wait`` never raises the awaited
tasks' exceptions, only the caller's own ``CancelledError``; everything here is built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: default time a stop waits for a cancelled task to exit, seconds
STOP_TIMEOUT = 2.0


@contextlib.contextmanager
def current_task_in(tasks: set[asyncio.Task[Any]]) -> Iterator[None]:
    """Keep the running task in ``tasks`` while the block runs: a server's open request
    handlers (tasks aiohttp started), so its shutdown can ``stop_tasks`` them."""
    task = asyncio.current_task()
    if task is not None:
        tasks.add(task)
    try:
        yield
    finally:
        if task is not None:
            tasks.discard(task)


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any] | asyncio.Future[Any] | None],
    within: float = STOP_TIMEOUT,
    logger: logging.Logger = log,
) -> bool:
    """Cancel ``tasks`` and wait up to ``within`` s for all of them to exit.

    Returns True when every task exited in time.  The tasks' own exceptions (including the
    ``CancelledError`` they end with) are consumed; the caller's cancellation is not: if the
    caller is cancelled while waiting, ``CancelledError`` propagates at once (the tasks stay
    cancelled).  The current task is never cancelled by its own stop.
    """
    me = asyncio.current_task()
    pending = {t for t in tasks if t is not None and t is not me}
    for t in pending:
        t.cancel()
    if not pending:
        return True
    done, late = await asyncio.wait(pending, timeout=within)
    for t in done:  # retrieve results so asyncio never warns "exception was never retrieved"
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            name = t.get_name() if isinstance(t, asyncio.Task) else repr(t)
            logger.warning("task %s ended with %s: %s", name, type(exc).__name__, exc)
    for t in late:
        name = t.get_name() if isinstance(t, asyncio.Task) else repr(t)
        logger.warning("task %s did not stop within %.1f s", name, within)
    return not late


async def wait_bounded(task: asyncio.Future[T], within: float) -> bool:
    """Wait up to ``within`` s for ``task`` to finish on its own, without cancelling it.

    True when it finished.  Its exception, if any, is left for its owner; the caller's own
    cancellation propagates.
    """
    done, _ = await asyncio.wait({task}, timeout=within)
    return bool(done)
