"""The roster: who is in the room and which of their tracks feed the mix.

Room connectors report what their signaling says (``mixer_ext.connectors.base``); the
order of those events is whatever the room server sent.  ``Roster.apply`` turns each event
into the changes the mixer must make, in an order the mixer can take, and keeps just
enough state to do so:

* the mixer's own identity is never mixed nor listed (its events yield nothing);
* a track of someone not yet announced announces them first (``Joined`` before ``Attach``);
* a repeated join, a leave of someone unknown, or an unsubscribe of an unknown track
  yields nothing;
* a mute that arrives before its track is subscribed (Janus moderation can) is kept and
  applied when the track comes, so that participant shows ``-1`` from the start;
* a participant leaving takes every one of their tracks with them (one ``Left``).

Synchronous and without I/O: the worker executes the changes against the clock and mixer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixer_ext.connectors.base import (
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    TrackEnabledChanged,
    TrackSubscribed,
    TrackUnsubscribed,
)


@dataclass(frozen=True)
class Joined:
    identity: str


@dataclass(frozen=True)
class Left:
    identity: str
    reason: str


@dataclass(frozen=True)
class Attach:
    """Start mixing ``track`` (replaces an input of the same ``track_sid``)."""

    identity: str
    track_sid: str
    track: Any
    enabled: bool
    #: the track's encoded frames, when the connector taps them (``EncodedSource``)
    source: Any = None


@dataclass(frozen=True)
class Detach:
    identity: str
    track_sid: str


@dataclass(frozen=True)
class Enabled:
    identity: str
    track_sid: str
    enabled: bool


Change = Joined | Left | Attach | Detach | Enabled


class Roster:
    """Room events in, mixer changes out.  ``own_identity`` is the mixer bot's."""

    def __init__(self, own_identity: str) -> None:
        self.own_identity = own_identity
        #: identity -> {track_sid: enabled} of the subscribed tracks
        self._tracks: dict[str, dict[str, bool]] = {}
        #: (identity, track_sid) -> enabled, for tracks muted/unmuted before subscription
        self._early: dict[tuple[str, str], bool] = {}

    @property
    def participants(self) -> list[str]:
        return sorted(self._tracks)

    def tracks(self, identity: str) -> dict[str, bool]:
        """``track_sid -> enabled`` of ``identity``'s subscribed tracks (a copy)."""
        return dict(self._tracks.get(identity, {}))

    def apply(self, event: RoomEvent) -> list[Change]:
        """The changes ``event`` means for the mix (possibly none)."""
        if getattr(event, "identity", None) == self.own_identity:
            return []
        match event:
            case ParticipantJoined(identity=who):
                return self._join(who)
            case ParticipantLeft(identity=who, reason=reason):
                return self._leave(who, reason)
            case TrackSubscribed(
                identity=who, track_sid=sid, track=track, enabled=enabled, source=source
            ):
                changes = self._join(who)
                enabled = self._early.pop((who, sid), enabled)
                self._tracks[who][sid] = enabled
                return [*changes, Attach(who, sid, track, enabled, source)]
            case TrackUnsubscribed(identity=who, track_sid=sid):
                self._early.pop((who, sid), None)
                if self._tracks.get(who, {}).pop(sid, None) is None:
                    return []
                return [Detach(who, sid)]
            case TrackEnabledChanged(identity=who, track_sid=sid, enabled=enabled):
                tracks = self._tracks.get(who)
                if tracks is None or sid not in tracks:
                    self._early[(who, sid)] = enabled
                    return []
                if tracks[sid] == enabled:
                    return []
                tracks[sid] = enabled
                return [Enabled(who, sid, enabled)]
        return []

    def clear(self, reason: str) -> list[Change]:
        """Everyone leaves (the bot left the room); the next join announces them again."""
        changes: list[Change] = [Left(who, reason) for who in self.participants]
        self._tracks.clear()
        self._early.clear()
        return changes

    def _join(self, who: str) -> list[Change]:
        if who in self._tracks:
            return []
        self._tracks[who] = {}
        return [Joined(who)]

    def _leave(self, who: str, reason: str) -> list[Change]:
        self._early = {k: v for k, v in self._early.items() if k[0] != who}
        if self._tracks.pop(who, None) is None:
            return []
        return [Left(who, reason)]
