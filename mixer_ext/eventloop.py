"""Which asyncio event loop the long-running commands use (``MIXER_EVENT_LOOP``).

``asyncio`` (the default) is the standard library's loop.  ``uvloop`` runs the same
coroutines on libuv (``pip install 'mixer-ext[uvloop]'``); a missing uvloop is a
one-line configuration error.  Issue 13 asked whether uvloop makes the receive path
or the room server's forwarding cheaper: ``bench/capacity.py --receivers
mixer,uvloop`` measures the worker on both loops side by side, and on this project's
2-core machine the difference was within the run-to-run noise (CHANGELOG.md, "uvloop"),
so the default stays the standard loop, which every test runs on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mixer_ext.errors import ConfigError
from mixer_ext.settings import EventLoop

log = logging.getLogger(__name__)
T = TypeVar("T")


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for the chosen loop; ``ConfigError`` when uvloop is chosen and absent."""
    if choice is EventLoop.UVLOOP:
        try:
            import uvloop
        except ImportError:
            raise ConfigError(
                "MIXER_EVENT_LOOP=uvloop: uvloop is not installed "
                "(pip install 'mixer-ext[uvloop]', or MIXER_EVENT_LOOP=asyncio)"
            ) from None
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def freeze_startup_heap() -> None:
    """Take everything alive now (modules, settings, codecs) out of the collector's passes.

    A full (generation 2) pass of Python's cyclic garbage collector walks every tracked
    object, and most of a worker's are there from its imports (aiortc, PyAV, numpy,
    pydantic...).  Such a pass lands inside whatever callback allocates at the time:
    during a burst of 250 Janus joins it took 30-34 ms of the loop's CPU at once, more
    than a tick (``bench/join_burst.py`` with ``JOIN_BURST_SLOW_MS``).  ``gc.freeze()``
    after a collection moves them to the permanent generation (as the ``gc`` docs
    suggest for long-lived processes); the objects made later are collected as
    before, so a pass still walks those (one burst's 250 subscriptions: a 24 ms pass
    was left in one run of two, none over 5 ms in the other).  The price: cyclic
    garbage among the startup objects is never freed (made before the run began, it
    does not grow).
    """
    gc.collect()
    gc.freeze()


def run(main: Coroutine[Any, Any, T], choice: EventLoop) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never started: no "never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        log.debug("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
        return runner.run(main)
