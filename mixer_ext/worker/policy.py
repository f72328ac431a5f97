"""When the worker joins, retries, gives up and ends: a sans-I/O policy.

The runner asks and reports; this module decides, from times it is given (seconds on a
monotonic clock), never by reading a clock or sleeping, so every rule is tested with plain
numbers:

* **Deadline.** The maximum participant duration counts from the first successful join;
  later rejoins do not move it, nor does a restart of the process (``resume``).
* **Retry.** A transient failure (refused for now, timed out, connection lost) is retried
  after a backoff that starts at ``first_delay`` and doubles up to ``max_delay``, with up
  to ``jitter`` of it added at random, so that the workers of many rooms behind one broken
  server do not all come back in the same instant.  A join resets the backoff.
* **Give up.** When the room could not be (re)joined for ``give_up_after`` seconds in a
  row, the run fails: ``error-loading-extension`` if it never got in,
  ``error-streaming-media`` if it did.
* **How a stay ends** (``outcome_of_disconnect``): the room's maximum duration or the room
  ending are a clean end (and the worker never joins again); a permanent refusal fails; a
  ``duplicate-identity`` fails loudly, because the worker never causes one itself: someone
  else joined under the mixer's identity and took the stream over.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mixer_ext.connectors.base import Reason
from mixer_ext.worker.status import EndReason, FailReason, State

#: time allowed for one join attempt, seconds
CONNECT_TIMEOUT = 20.0
#: the retry backoff: first delay, cap (doubling in between), random share added
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 15.0
RETRY_JITTER = 0.2
#: give up when the room cannot be (re)joined for this long in a row
RETRY_GIVE_UP_AFTER = 300.0

EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the state reported, its reason, and a human detail."""

    state: State
    reason: str
    detail: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.state is State.ENDED else EXIT_FAILED


@dataclass(frozen=True)
class Retry:
    """Join again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    outcome: Outcome


class JoinPolicy:
    """Backoff, give-up and deadline of one run.  Call ``joined``/``left``/``failed``."""

    def __init__(
        self,
        max_duration: float,
        now: float,
        *,
        first_delay: float = RETRY_FIRST_DELAY,
        max_delay: float = RETRY_MAX_DELAY,
        jitter: float = RETRY_JITTER,
        give_up_after: float = RETRY_GIVE_UP_AFTER,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if max_duration <= 0:
            raise ValueError(f"max_duration must be positive, not {max_duration}")
        self.max_duration = max_duration
        self._first, self._max, self._jitter = first_delay, max_delay, jitter
        self._give_up_after = give_up_after
        self._rng = rng
        self._delay = first_delay
        self._last_ok = now
        #: when the maximum duration is reached; None until the first join
        self.deadline: float | None = None
        self.joins = 0

    def resume(self, now: float, elapsed: float) -> None:
        """A restarted process: the run's first join was ``elapsed`` seconds ago."""
        self.deadline = now + self.max_duration - max(0.0, elapsed)

    def joined(self, now: float) -> bool:
        """A join succeeded.  True for this process's first one (the run has (re)started)."""
        self.joins += 1
        self._delay = self._first
        self._last_ok = now
        if self.deadline is None:
            self.deadline = now + self.max_duration
        return self.joins == 1

    def left(self, now: float) -> None:
        """The stay in the room ended (for a reason that may be retried)."""
        self._last_ok = now

    def failed(self, now: float, room: str, why: str) -> Retry | GiveUp:
        """A join failed or a stay ended transiently: retry after a delay, or give up."""
        if now - self._last_ok > self._give_up_after:
            reason = (
                FailReason.ERROR_STREAMING_MEDIA
                if self.joins
                else FailReason.ERROR_LOADING_EXTENSION
            )
            return GiveUp(Outcome(State.FAILED, reason, f"cannot join room {room!r}: {why}"))
        delay = self._delay * (1.0 + self._jitter * self._rng())
        self._delay = min(self._delay * 2, self._max)
        return Retry(delay)

    def remaining(self, now: float) -> float | None:
        """Seconds to the deadline (never negative); None before the first join."""
        return None if self.deadline is None else max(0.0, self.deadline - now)


def outcome_of_disconnect(reason: str, permanent: bool, identity: str) -> Outcome | None:
    """The end of the run a room disconnect means, or None when it is worth rejoining."""
    if reason == Reason.MAX_PARTICIPANT_DURATION:
        return Outcome(State.ENDED, EndReason.MAX_PARTICIPANT_DURATION)
    if reason == Reason.ROOM_ENDED:
        return Outcome(State.ENDED, EndReason.ROOM_ENDED)
    if reason == Reason.DUPLICATE_IDENTITY:
        return Outcome(
            State.FAILED,
            FailReason.ERROR_STREAMING_MEDIA,
            f"another connection joined the room as {identity!r} and replaced the mixer "
            "(the worker never does this itself; check who holds a token for that identity)",
        )
    if permanent:
        return Outcome(State.FAILED, FailReason.ERROR_STREAMING_MEDIA, reason)
    return None
