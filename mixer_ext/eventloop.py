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
