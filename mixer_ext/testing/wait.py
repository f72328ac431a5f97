"""The one wait-until of the tests and benchmarks: poll a check until it holds.

``until`` (async) and ``until_sync`` (a blocking caller) are the same loop: call
``check`` every ``every`` seconds; return its first value that ``ok`` accepts (by
default: the first truthy one); after ``within`` seconds raise ``AssertionError`` naming
``what`` and the last value seen, so a test that times out says what it waited for and
what it saw instead.  The async form also takes a
check that returns an awaitable (a browser query), and ``blocking=True`` runs a check
that blocks (an HTTP client) in a thread so the event loop keeps serving the servers the
check talks to.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["until", "until_sync"]


def _timed_out(what: object, within: float, last: object) -> AssertionError:
    shown = repr(last)
    if len(shown) > 300:
        shown = shown[:300] + "..."
    return AssertionError(f"not within {within:g} s: {what}; last seen: {shown}")


async def until(
    check: Callable[[], T | Awaitable[T]],
    within: float = 10.0,
    what: object = "",
    *,
    ok: Callable[[T], object] = bool,
    every: float = 0.05,
    blocking: bool = False,
) -> T:
    """The first value of ``check()`` that ``ok`` accepts, polled every ``every`` s."""
    deadline = time.monotonic() + within
    while True:
        got: Any = await asyncio.to_thread(check) if blocking else check()
        if inspect.isawaitable(got):
            got = await got
        if ok(got):
            return got  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise _timed_out(what or check, within, got)
        await asyncio.sleep(every)


def until_sync(
    check: Callable[[], T],
    within: float = 10.0,
    what: object = "",
    *,
    ok: Callable[[T], object] = bool,
    every: float = 0.05,
) -> T:
    """``until`` for a caller without an event loop (blocks the calling thread)."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if ok(got):
            return got
        if time.monotonic() >= deadline:
            raise _timed_out(what or check, within, got)
        time.sleep(every)
