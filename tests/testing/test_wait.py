"""The one wait-until (mixer_ext/testing/wait.py): what it returns and how it fails."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from mixer_ext.testing.wait import until, until_sync


async def test_returns_the_first_accepted_value() -> None:
    counter = itertools.count()
    assert await until(lambda: next(counter) >= 3 and "ready", 2) == "ready"
    values = iter([[1], [1, 2], [1, 2, 3]])
    assert await until(lambda: next(values), 2, ok=lambda v: len(v) == 2) == [1, 2]


async def test_awaits_an_async_check_and_runs_a_blocking_one_in_a_thread() -> None:
    async def check() -> str:
        await asyncio.sleep(0)
        return "async"

    assert await until(check, 2) == "async"
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def blocking() -> bool:
        seen.append(threading.get_ident())
        return True

    assert await until(blocking, 2, blocking=True)
    assert seen and seen[0] != loop_thread


async def test_times_out_naming_what_and_the_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as err:
        await until(lambda: [], 0.2, "the list to fill")
    assert 0.2 <= time.monotonic() - t0 < 2
    assert str(err.value) == "not within 0.2 s: the list to fill; last seen: []"


def test_the_sync_form_is_the_same_loop() -> None:
    counter = itertools.count()
    assert until_sync(lambda: next(counter) == 2, 2) is True
    with pytest.raises(AssertionError, match="never; last seen: 0"):
        until_sync(lambda: 0, 0.1, "never")
