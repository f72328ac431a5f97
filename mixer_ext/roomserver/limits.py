"""What the room server allows one connection, one address and one identity: no I/O.

The server (``mixer_ext.roomserver.server``) asks these small classes before it acts,
so that one misbehaving peer costs only itself (issue 16, items 1, 2 and 4):

* ``TokenBucket``: messages a joined connection may send (a burst, then a
  steady rate); a connection that runs dry is closed, never its receivers.
* ``LatestWins``: state updates waiting in one receiver's outbox, one slot per
  key (``(identity, track_sid)``): a flood of toggles costs a receiver one queued
  message, carrying the latest value, however long the flood.
* ``ConnectionLimits``: sockets not joined yet (all addresses) and sockets per
  address; ``PreJoinGuard``: errors allowed before ``join``.
* ``LogThrottle``: at most a few log lines per kind and period; the rest are
  counted and reported in the next line that gets through.
* ``identity_refusal``: the mixer's identity is reserved for mixer-role tokens.

Every method that depends on time takes ``now`` (monotonic seconds), so the
rules are tested with a fake clock.  A token bucket of our own rather than
``aiolimiter``: the server never waits for capacity (it refuses or closes), it
needs the answer synchronously inside a read loop, and a fake clock; that is
ten lines, where aiolimiter's reading of the loop's clock and its waiting
``acquire()`` would be in the way.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: the role a token grants; a token without the claim is a participant's
ROLE_PARTICIPANT = "participant"
ROLE_MIXER = "mixer"
ROLES = frozenset({ROLE_PARTICIPANT, ROLE_MIXER})


class TokenBucket:
    """``burst`` messages at once, refilled at ``rate`` per second.

    ``take(now)`` answers whether one more message is within the limit and, if
    so, spends it.  A refused message spends nothing.
    """

    def __init__(self, rate: float, burst: float, *, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = max(0.0, now - self._at)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class LatestWins(Generic[K, V]):
    """Pending values by key; a key already pending only has its value replaced.

    The sender queues a marker for ``key`` only when ``put`` returns True (the key
    was not pending); when it reaches the marker it sends ``pop(key)``, the value
    put last.  So the queue holds at most one entry per key.
    """

    def __init__(self) -> None:
        self._pending: dict[K, V] = {}

    def put(self, key: K, value: V) -> bool:
        new = key not in self._pending
        self._pending[key] = value
        return new

    def pop(self, key: K) -> V | None:
        return self._pending.pop(key, None)

    def discard(self, key: K) -> None:
        self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)


class Refusal(enum.StrEnum):
    """Why a socket was refused before it could join (a metric label)."""

    TOO_MANY_PENDING = "too-many-pending"
    TOO_MANY_FROM_ADDRESS = "too-many-from-address"


@dataclass(slots=True)
class ConnectionLimits:
    """Counts sockets: all of one address, and those of every address not joined yet.

    ``open(address)`` before the WebSocket handshake (a refusal: answer 503 and
    close); ``joined(address)`` once admitted; ``closed(address, joined=...)``
    when the socket ends, whatever happened.
    """

    max_pending: int
    max_per_address: int
    pending: int = 0
    by_address: Counter[str] = field(default_factory=Counter)

    def open(self, address: str) -> Refusal | None:
        if self.by_address[address] >= self.max_per_address:
            return Refusal.TOO_MANY_FROM_ADDRESS
        if self.pending >= self.max_pending:
            return Refusal.TOO_MANY_PENDING
        self.pending += 1
        self.by_address[address] += 1
        return None

    def joined(self, address: str) -> None:
        self.pending = max(0, self.pending - 1)

    def closed(self, address: str, *, joined: bool) -> None:
        if not joined:
            self.pending = max(0, self.pending - 1)
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


@dataclass(slots=True)
class PreJoinGuard:
    """Before ``join``: a few refused messages are forgiven, then the socket is closed."""

    max_errors: int
    errors: int = 0

    def error(self) -> bool:
        """Count one refused message; True when the socket must now be closed."""
        self.errors += 1
        return self.errors >= self.max_errors


class LogThrottle:
    """At most ``lines`` log lines per key every ``period`` seconds.

    ``allow(key, now)`` returns ``(log_it, suppressed)``: whether to write this
    line, and how many lines of that key were held back since the last one
    written (to say so in it).
    """

    def __init__(self, lines: int, period: float) -> None:
        self.lines = lines
        self.period = period
        self._window: dict[str, tuple[float, int]] = {}
        self._suppressed: Counter[str] = Counter()

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        start, count = self._window.get(key, (now, 0))
        if now - start >= self.period:
            start, count = now, 0
        if count < self.lines:
            self._window[key] = (start, count + 1)
            suppressed = self._suppressed.pop(key, 0)
            return True, suppressed
        self._window[key] = (start, count)
        self._suppressed[key] += 1
        return False, 0


def identity_refusal(
    identity: str,
    role: str,
    *,
    reserved: frozenset[str],
    holder_role: str | None,
) -> str | None:
    """Why a token of ``role`` may not take ``identity``, or None when it may.

    ``reserved``: the configured mixer identities; ``holder_role``: the role of the
    session holding ``identity`` now (None when nobody does).  Only a mixer-role
    token takes a reserved identity or replaces a mixer-role session.
    """
    if role == ROLE_MIXER:
        return None
    if identity in reserved:
        return f"identity {identity!r} is reserved for the mixer (needs a mixer-role token)"
    if holder_role == ROLE_MIXER:
        return f"identity {identity!r} is held by a mixer (needs a mixer-role token)"
    return None
