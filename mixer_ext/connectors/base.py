"""The room connector interface: the only thing above it knows of a room.

A connector joins one room under one identity and turns the room's
signaling into the small set of events below.  Two implementations sit
behind it: the embedded room server (``mixer_ext.connectors.embedded``) and Janus
VideoRoom (``mixer_ext.connectors.janus``).  Audio arrives as aiortc tracks whose
``recv()`` returns ``av.AudioFrame`` and simply blocks while the sender is
silent, so consumers must never await tracks in lockstep.

Lifecycle: ``await connect()`` (raises ``RoomConnectError``), then iterate
``events()`` until it yields ``Disconnected`` and ends; ``await
disconnect()`` at any time leaves the room and ends the iterator.  A
connector never reconnects on its own: the worker decides, because after the
maximum participant duration it must not.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from mixer_ext.errors import MixerError

if TYPE_CHECKING:
    from aiortc.mediastreams import MediaStreamTrack

    from mixer_ext.core.frames import EncodedSource


class Reason(StrEnum):
    """Why someone left or was disconnected.  Values are on the wire and in logs."""

    #: the participant left by itself
    LEFT = "left"
    #: the room's maximum participant duration was reached
    MAX_PARTICIPANT_DURATION = "max-participant-duration"
    #: the room was ended (by an operator, or the empty-room timeout)
    ROOM_ENDED = "room-ended"
    #: another connection joined with the same identity and replaced this one
    DUPLICATE_IDENTITY = "duplicate-identity"
    #: the room is full
    ROOM_FULL = "room-full"
    #: the token was missing, forged, expired or for another room
    UNAUTHORIZED = "unauthorized"
    #: the signaling connection or the media path broke (transient)
    CONNECTION_LOST = "connection-lost"
    #: the server shut down
    SERVER_SHUTDOWN = "server-shutdown"
    #: the client broke the protocol
    PROTOCOL_ERROR = "protocol-error"
    #: the client sent more messages than its connection's rate limit allows
    RATE_LIMITED = "rate-limited"


#: Reasons after which joining again is pointless or forbidden.
PERMANENT_REASONS = frozenset(
    {
        Reason.LEFT,
        Reason.MAX_PARTICIPANT_DURATION,
        Reason.ROOM_ENDED,
        Reason.DUPLICATE_IDENTITY,
        Reason.UNAUTHORIZED,
        Reason.ROOM_FULL,
    }
)


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    identity: str


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    identity: str
    reason: str


@dataclass(frozen=True, slots=True)
class TrackSubscribed:
    """An audio track of ``identity`` is now received as ``track``.

    ``source``: the same track's encoded RTP payloads (``mixer_ext.connectors.rtptap``),
    when the connector taps them for the mixer; ``track`` then yields no frames.
    """

    identity: str
    track_sid: str
    track: MediaStreamTrack
    enabled: bool = True
    source: EncodedSource | None = None


@dataclass(frozen=True, slots=True)
class TrackUnsubscribed:
    identity: str
    track_sid: str


@dataclass(frozen=True, slots=True)
class TrackEnabledChanged:
    """Mute (``enabled=False``) or unmute of a subscribed track."""

    identity: str
    track_sid: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The last event: the bot is out of the room, and why."""

    reason: str

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT_REASONS


RoomEvent = (
    ParticipantJoined
    | ParticipantLeft
    | TrackSubscribed
    | TrackUnsubscribed
    | TrackEnabledChanged
    | Disconnected
)


class RoomConnectError(MixerError):
    """Joining failed.  ``permanent`` says whether trying again can help."""

    def __init__(self, message: str, *, reason: str = Reason.CONNECTION_LOST) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT_REASONS


class RoomConnector(abc.ABC):
    """One room, one identity.  See the module docstring for the lifecycle."""

    def __init__(self, room: str, identity: str) -> None:
        self.room = room
        self.identity = identity

    @abc.abstractmethod
    async def connect(self) -> None:
        """Join the room.  Participants already present arrive as events after this."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[RoomEvent]:
        """Room events in order; ends right after yielding ``Disconnected``."""

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Leave the room and release media.  Idempotent."""
