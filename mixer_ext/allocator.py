"""Keep glibc's malloc from holding freed native memory per thread (issue 16.0).

Measured (``bench/rss_outputs.py``, ``tests/outputs/test_rss.py``): an event
HLS output with 0.5 s segments grows its process RSS ~10 MB per audio minute
after a few minutes (81.5 -> 94.8 MB over 4 minutes; with a ``.ts`` and an
``.m4a`` beside it 86 -> 148 MB over 6 minutes), while the Python heap stays
flat.  ``malloc_trim(0)`` after each minute makes it flat (81.0 -> 81.8 MB),
so the memory is freed, not leaked: FFmpeg's per-segment container and
buffer allocations on the encoder and output threads land in per-thread
glibc arenas (up to 8 x cores of them), which fragment and are not given
back.  Capping the arenas at 2, before any thread starts, gives the same
flat curve (81.1 -> 82.0 MB) without a periodic trim.

``limit_malloc_arenas()`` does that with ``mallopt(M_ARENA_MAX, n)``; the
environment variable ``MALLOC_ARENA_MAX`` does the same from outside (it
wins when set: this function leaves it alone).  Elsewhere than glibc it is
a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: glibc's mallopt parameter number for the arena cap (malloc.h: M_ARENA_MAX -8)
M_ARENA_MAX = -8
#: arenas kept: the main one and one shared by every other thread
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); True when the cap is in place."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True  # set from outside: glibc read it at start-up
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
