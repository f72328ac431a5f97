"""Room state of the embedded room server, with no I/O: roster, limits, timers.

The server (``mixer_ext.roomserver.app``) owns the sockets and peer connections
and asks a ``Room`` what to do; every decision that depends on time takes
``now`` (monotonic seconds) so it is tested with a fake clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime


class Admission(enum.Enum):
    ADMIT = "admit"
    #: the identity is present: the old connection is replaced (it gets duplicate-identity)
    REPLACE = "replace"
    FULL = "full"


@dataclass(slots=True)
class TrackState:
    sid: str
    kind: str = "audio"
    enabled: bool = True


@dataclass(slots=True)
class ParticipantState:
    identity: str
    #: monotonic seconds, for the maximum participant duration
    joined_at: float
    #: wall clock, for operators
    joined_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    tracks: dict[str, TrackState] = field(default_factory=dict)

    def joined_iso(self) -> str:
        return self.joined_wall.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Room:
    """One room: who is in it, and when someone or the room itself must go.

    Limits: ``max_participants`` (everyone counts, the mixer bot too),
    ``max_participant_duration`` seconds from each participant's join,
    ``empty_timeout`` seconds during which an empty room stays open
    (0 = ends as soon as the last one leaves).
    """

    def __init__(
        self,
        name: str,
        *,
        now: float,
        max_participants: int,
        max_participant_duration: float,
        empty_timeout: float,
    ) -> None:
        self.name = name
        self.created_at = now
        self.created_wall = datetime.now(UTC)
        self.max_participants = max_participants
        self.max_participant_duration = max_participant_duration
        self.empty_timeout = empty_timeout
        self.participants: dict[str, ParticipantState] = {}
        self._empty_since: float | None = now

    def admission(self, identity: str) -> Admission:
        if identity in self.participants:
            return Admission.REPLACE
        if len(self.participants) >= self.max_participants:
            return Admission.FULL
        return Admission.ADMIT

    def add(self, identity: str, now: float) -> ParticipantState:
        """Add ``identity`` (after ``admission``; a present one is replaced, its clock reset)."""
        state = ParticipantState(identity=identity, joined_at=now)
        self.participants[identity] = state
        self._empty_since = None
        return state

    def remove(self, identity: str, now: float) -> ParticipantState | None:
        state = self.participants.pop(identity, None)
        if not self.participants and self._empty_since is None:
            self._empty_since = now
        return state

    def overstayed(self, now: float) -> list[str]:
        """Identities whose maximum participant duration has been reached at ``now``."""
        limit = self.max_participant_duration
        return [p.identity for p in self.participants.values() if now - p.joined_at >= limit]

    def deadline(self, identity: str) -> float | None:
        p = self.participants.get(identity)
        return None if p is None else p.joined_at + self.max_participant_duration

    def empty_expired(self, now: float) -> bool:
        """True when the room has been empty for ``empty_timeout`` seconds and should end."""
        return self._empty_since is not None and now - self._empty_since >= self.empty_timeout
