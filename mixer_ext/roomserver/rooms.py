"""The one owner of the room server's rooms, participants, tracks, subscriptions and admission.

Synchronous and sans-I/O: no sockets, no peer connections, no tasks, no clock of its own
(every method that depends on time takes ``now``, monotonic seconds).  The front-ends (the
project's signaling, the twilio-video.js gateway, the Video REST and the operator REST) are
thin adapters that call its public methods; whatever changes the roster comes back as
**roster events** (``ParticipantJoined``, ``TrackPublished``, ``RoomEnded``...), returned by
the method *and* handed, in order, to every ``RosterListener`` attached with ``attach()``:
the server's fan-out to the other connections, the metrics, the room records and status
callbacks, and (issue 23) the per-track recorder.  Nothing else sets a room's state.

States of a participant: ``connected`` -> ``reconnecting`` -> ``connected`` (its connection
dropped and came back within ``reconnect_window`` seconds) -> ``disconnected`` (it left, was
removed, replaced by a new connection of the same identity, or its window ran out).  A
reconnecting participant keeps its seat, its SID and its tracks.

Admission (``join``): the names are checked (``names``), a mixer's identity is reserved for
mixer-role tokens (``limits.identity_refusal``), a full room refuses (everyone counts, the
mixer too), and an identity already present is replaced (the old participant leaves with
``duplicate-identity``; the caller closes its connection).  A refusal is ``Refused`` with a
``Refusal`` each front-end maps onto its own wire code.

The participant carries ``connection``: an opaque handle the front-end that admitted it
puts there (its session object), so that other front-ends reach it only through the owner.

Why one module: it is the owner itself; rooms, participants, tracks, subscriptions,
admission and the room rules change one another (a leave ends subscriptions, an empty
room times out, a reconnection keeps a seat) and emit one ordered stream of roster
events.  Split, the pieces would have to reach into each other's state, which is what
the owner replaced (issue 21.1).  Names and limits are apart (``names``, ``limits``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver.limits import ROLE_PARTICIPANT, identity_refusal
from mixer_ext.roomserver.names import check_identity, check_room_name
from mixer_ext.roomserver.subscribe_rules import TRACK_PRIORITY, SubscribeRule, wanted
from mixer_ext.roomserver.twilio.sids import PARTICIPANT, ROOM, new_sid

log = logging.getLogger(__name__)

#: seconds a participant whose connection dropped keeps its seat (twilio-video.js retries
#: its signaling for about 30 s before it gives up with 53001/53004)
DEFAULT_RECONNECT_WINDOW = 30.0


class Admission(enum.Enum):
    ADMIT = "admit"
    #: the identity is present: the old connection is replaced (it gets duplicate-identity)
    REPLACE = "replace"
    FULL = "full"


class Status(enum.StrEnum):
    """A participant's state, as the Video REST shows it."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


class Refusal(enum.StrEnum):
    """Why ``join`` or ``create_room`` said no (each front-end maps it onto its own code)."""

    ROOM_NAME_INVALID = "room-name-invalid"
    IDENTITY_INVALID = "identity-invalid"
    #: a mixer's identity, or one a mixer holds, needs a mixer-role token
    IDENTITY_RESERVED = "identity-reserved"
    ROOM_FULL = "room-full"
    ROOM_EXISTS = "room-exists"


class Refused(Exception):
    """A refused admission or room creation: ``refusal`` and a one-line reason."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True, eq=False)
class Track:
    """One published track: ``sid`` (``MT…`` or the own protocol's ``TR_…``), the name its
    publisher gave it, ``kind`` (only ``audio`` carries media here) and whether it is on."""

    sid: str
    name: str = ""
    kind: str = "audio"
    enabled: bool = True


@dataclass(slots=True, eq=False)
class Participant:
    identity: str
    #: monotonic seconds, for the maximum participant duration
    joined_at: float
    #: ``PA…``: new for every admission (a replacement or a rejoin is a new participant)
    sid: str = field(default_factory=lambda: new_sid(PARTICIPANT))
    role: str = ROLE_PARTICIPANT
    status: Status = Status.CONNECTED
    #: wall clock, for operators and the Video REST
    joined_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    tracks: dict[str, Track] = field(default_factory=dict)
    #: sids of the tracks this participant receives
    subscriptions: set[str] = field(default_factory=set)
    auto_subscribe: bool = True
    #: Twilio's Subscribe Rules once set over REST (None: ``auto_subscribe`` decides)
    subscribe_rules: tuple[SubscribeRule, ...] | None = None
    #: wall clock of the last rules update (the REST resource's date_updated)
    rules_updated: datetime | None = None
    #: monotonic seconds since when it is reconnecting (None when it is not)
    reconnecting_since: float | None = None
    #: the front-end's handle on this participant's connection (opaque to the owner)
    connection: object = None

    def joined_iso(self) -> str:
        return _iso(self.joined_wall)


#: the name the project's first releases gave this class
ParticipantState = Participant


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
        sid: str | None = None,
    ) -> None:
        self.name = name
        #: ``RM…``: names the room in the Video REST and the hosted extension's context
        self.sid = sid or new_sid(ROOM)
        self.created_at = now
        self.created_wall = datetime.now(UTC)
        self.max_participants = max_participants
        self.max_participant_duration = max_participant_duration
        self.empty_timeout = empty_timeout
        self.participants: dict[str, Participant] = {}
        self._empty_since: float | None = now

    def admission(self, identity: str) -> Admission:
        if identity in self.participants:
            return Admission.REPLACE
        if len(self.participants) >= self.max_participants:
            return Admission.FULL
        return Admission.ADMIT

    def add(self, identity: str, now: float, **fields: object) -> Participant:
        """Add ``identity`` (after ``admission``; a present one is replaced, its clock reset)."""
        state = Participant(identity=identity, joined_at=now, **fields)  # type: ignore[arg-type]
        self.participants[identity] = state
        self._empty_since = None
        return state

    def remove(self, identity: str, now: float) -> Participant | None:
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

    def created_iso(self) -> str:
        return _iso(self.created_wall)


# --- roster events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomCreated:
    room: Room


@dataclass(frozen=True, slots=True)
class RoomEnded:
    room: Room
    reason: str


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    room: Room
    participant: Participant


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    room: Room
    participant: Participant
    reason: str


@dataclass(frozen=True, slots=True)
class ParticipantReconnecting:
    room: Room
    participant: Participant


@dataclass(frozen=True, slots=True)
class ParticipantReconnected:
    room: Room
    participant: Participant


@dataclass(frozen=True, slots=True)
class TrackPublished:
    room: Room
    participant: Participant
    track: Track


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    room: Room
    participant: Participant
    track: Track


@dataclass(frozen=True, slots=True)
class TrackEnabled:
    room: Room
    participant: Participant
    track: Track


@dataclass(frozen=True, slots=True)
class TrackDisabled:
    room: Room
    participant: Participant
    track: Track


RosterEvent = (
    RoomCreated
    | RoomEnded
    | ParticipantJoined
    | ParticipantLeft
    | ParticipantReconnecting
    | ParticipantReconnected
    | TrackPublished
    | TrackUnpublished
    | TrackEnabled
    | TrackDisabled
)


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """What a rules update changes: (publisher, track sid) to receive, track sids to stop."""

    subscribe: list[tuple[Participant, str]]
    unsubscribe: list[str]


class RosterListener(Protocol):
    """Who reacts to the roster (fan-out, metrics, room records, recorder): attached once."""

    def on_roster(self, event: RosterEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """The result of an admission: who joined, whom it replaced, what happened."""

    room: Room
    participant: Participant
    #: the participant that held the identity (now disconnected): its connection must close
    replaced: Participant | None
    events: list[RosterEvent]


@dataclass(frozen=True, slots=True)
class Due:
    """What ``tick`` found: participants to remove (and why), rooms it ended."""

    removals: list[tuple[Room, Participant, str]]
    events: list[RosterEvent]


class Rooms(Mapping[str, Room]):
    """All rooms of one room server (see the module docstring)."""

    def __init__(
        self,
        *,
        max_participants: int,
        max_participant_duration: float,
        empty_timeout: float,
        mixer_identities: frozenset[str] = frozenset(),
        reconnect_window: float = DEFAULT_RECONNECT_WINDOW,
    ) -> None:
        self.max_participants = max_participants
        self.max_participant_duration = max_participant_duration
        self.empty_timeout = empty_timeout
        self.mixer_identities = mixer_identities
        self.reconnect_window = reconnect_window
        #: live rooms by unique name
        self.rooms: dict[str, Room] = {}
        self._listeners: list[RosterListener] = []

    # --- listeners -------------------------------------------------------------------------

    def attach(self, listener: RosterListener) -> None:
        """``listener.on_roster`` gets every event from now on, in order, synchronously."""
        self._listeners.append(listener)

    def _emit(self, events: list[RosterEvent]) -> list[RosterEvent]:
        for event in events:
            for listener in self._listeners:
                try:
                    listener.on_roster(event)
                except Exception:  # one listener's bug must not cost the others their events
                    log.exception("room server: a roster listener failed on %s", event)
        return events

    # --- lookups (a read-only mapping of the live rooms by unique name) -----------------------

    def __getitem__(self, name: str) -> Room:
        return self.rooms[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.rooms)

    def __len__(self) -> int:
        return len(self.rooms)

    def by_sid(self, sid: str) -> Room | None:
        return next((room for room in self.rooms.values() if room.sid == sid), None)

    def resolve(self, key: str) -> str:
        """The unique name of the live room named or SID'd ``key`` (else ``key`` itself)."""
        room = self.by_sid(key) if key.startswith("RM") else None
        return room.name if room is not None else key

    def participant(self, room: str, identity: str) -> Participant | None:
        live = self.rooms.get(room)
        return None if live is None else live.participants.get(identity)

    def holds(self, participant: Participant, room: Room) -> bool:
        """``participant`` is still the one holding its identity in ``room``."""
        return (
            self.rooms.get(room.name) is room
            and room.participants.get(participant.identity) is participant
        )

    def count_participants(self) -> int:
        return sum(len(room.participants) for room in self.rooms.values())

    def others(self, room: Room, participant: Participant) -> Iterator[Participant]:
        return (p for p in room.participants.values() if p is not participant)

    def enabled(self, identity: str, track_sid: str) -> bool:
        """Whether the track ``track_sid`` of ``identity`` is on (True when unknown)."""
        for room in self.rooms.values():
            p = room.participants.get(identity)
            if p is not None and track_sid in p.tracks:
                return p.tracks[track_sid].enabled
        return True

    # --- rooms -----------------------------------------------------------------------------

    def _new_room(
        self, name: str, now: float, sid: str | None = None, **limits: float | int | None
    ) -> Room:
        room = Room(
            name,
            now=now,
            sid=sid,
            max_participants=int(limits.get("max_participants") or self.max_participants),
            max_participant_duration=float(
                limits.get("max_participant_duration") or self.max_participant_duration
            ),
            empty_timeout=float(
                self.empty_timeout
                if limits.get("empty_timeout") is None
                else limits["empty_timeout"]  # type: ignore[arg-type]
            ),
        )
        self.rooms[name] = room
        return room

    def create_room(
        self,
        name: str | None,
        now: float,
        *,
        max_participants: int | None = None,
        max_participant_duration: float | None = None,
        empty_timeout: float | None = None,
    ) -> Room:
        """A new empty room (Video REST ``POST /Rooms``); ``Refused`` when it exists.

        ``name`` None: the room's ``RM`` SID is its unique name too (as Twilio does)."""
        sid = new_sid(ROOM)
        name = name or sid
        try:
            check_room_name(name)
        except ValueError as exc:
            raise Refused(Refusal.ROOM_NAME_INVALID, str(exc)) from None
        if name in self.rooms:
            raise Refused(Refusal.ROOM_EXISTS, "Room exists")
        room = self._new_room(
            name,
            now,
            sid=sid,
            max_participants=max_participants,
            max_participant_duration=max_participant_duration,
            empty_timeout=empty_timeout,
        )
        self._emit([RoomCreated(room)])
        return room

    def end_room(self, room: Room, reason: str, now: float) -> list[RosterEvent]:
        """Everyone leaves with ``reason``, then the room ends; the callers close the
        departed participants' connections (``ParticipantLeft.participant.connection``)."""
        if self.rooms.get(room.name) is not room:
            return []
        events: list[RosterEvent] = []
        for participant in list(room.participants.values()):
            events += self._departure(room, participant, reason, now)
        del self.rooms[room.name]
        events.append(RoomEnded(room, reason))
        return self._emit(events)

    # --- participants ----------------------------------------------------------------------

    def check_join(self, room_name: str, identity: str, role: str) -> None:
        """Raise ``Refused`` if ``identity`` may not join ``room_name`` now (no change)."""
        try:
            check_room_name(room_name)
        except ValueError as exc:
            raise Refused(Refusal.ROOM_NAME_INVALID, str(exc)) from None
        try:
            check_identity(identity)
        except ValueError as exc:
            raise Refused(Refusal.IDENTITY_INVALID, str(exc)) from None
        room = self.rooms.get(room_name)
        holder = None if room is None else room.participants.get(identity)
        refusal = identity_refusal(
            identity,
            role,
            reserved=self.mixer_identities,
            holder_role=None if holder is None else holder.role,
        )
        if refusal is not None:
            raise Refused(Refusal.IDENTITY_RESERVED, refusal)
        if room is not None and room.admission(identity) is Admission.FULL:
            raise Refused(Refusal.ROOM_FULL, f"room is full ({len(room.participants)})")

    def join(
        self,
        room_name: str,
        identity: str,
        now: float,
        *,
        role: str = ROLE_PARTICIPANT,
        connection: object = None,
        auto_subscribe: bool = True,
    ) -> Admitted:
        """Admit ``identity`` into ``room_name`` (created if need be) or raise ``Refused``."""
        self.check_join(room_name, identity, role)
        events: list[RosterEvent] = []
        room = self.rooms.get(room_name)
        if room is None:
            room = self._new_room(room_name, now)
            events.append(RoomCreated(room))
        replaced = room.participants.get(identity)
        if replaced is not None:
            events += self._departure(room, replaced, Reason.DUPLICATE_IDENTITY, now)
        participant = room.add(
            identity, now, role=role, connection=connection, auto_subscribe=auto_subscribe
        )
        events.append(ParticipantJoined(room, participant))
        self._emit(events)
        return Admitted(room, participant, replaced, events)

    def leave(self, room: Room, participant: Participant, reason: str, now: float) -> bool:
        """``participant`` is gone (``reason``); False when it no longer held its seat
        (already gone, or replaced by a newer connection of its identity)."""
        if not self.holds(participant, room):
            return False
        self._emit(self._departure(room, participant, reason, now))
        return True

    def _departure(
        self, room: Room, participant: Participant, reason: str, now: float
    ) -> list[RosterEvent]:
        events: list[RosterEvent] = [
            TrackUnpublished(room, participant, track) for track in participant.tracks.values()
        ]
        room.remove(participant.identity, now)
        participant.status = Status.DISCONNECTED
        participant.reconnecting_since = None
        participant.subscriptions.clear()
        events.append(ParticipantLeft(room, participant, reason))
        return events

    def participant_reconnecting(self, room: Room, participant: Participant, now: float) -> bool:
        """Its connection dropped: it keeps its seat for ``reconnect_window`` seconds."""
        if not self.holds(participant, room) or participant.status is not Status.CONNECTED:
            return False
        participant.status = Status.RECONNECTING
        participant.reconnecting_since = now
        self._emit([ParticipantReconnecting(room, participant)])
        return True

    def participant_reconnected(
        self, room: Room, participant: Participant, now: float, *, connection: object = None
    ) -> bool:
        """It came back (on ``connection`` when its handle changed) within its window."""
        if not self.holds(participant, room) or participant.status is not Status.RECONNECTING:
            return False
        participant.status = Status.CONNECTED
        participant.reconnecting_since = None
        if connection is not None:
            participant.connection = connection
        self._emit([ParticipantReconnected(room, participant)])
        return True

    # --- tracks ----------------------------------------------------------------------------

    def publish_track(
        self,
        room: Room,
        participant: Participant,
        sid: str,
        *,
        name: str = "",
        kind: str = "audio",
        enabled: bool = True,
    ) -> Track | None:
        """``participant`` publishes ``sid`` (None when it is gone or already published)."""
        if not self.holds(participant, room) or sid in participant.tracks:
            return None
        track = Track(sid=sid, name=name or sid, kind=kind, enabled=enabled)
        participant.tracks[sid] = track
        self._emit([TrackPublished(room, participant, track)])
        return track

    def unpublish_track(self, room: Room, participant: Participant, sid: str) -> Track | None:
        if not self.holds(participant, room):
            return None
        track = participant.tracks.pop(sid, None)
        if track is None:
            return None
        for other in room.participants.values():
            other.subscriptions.discard(sid)
        self._emit([TrackUnpublished(room, participant, track)])
        return track

    def set_track_enabled(
        self, room: Room, participant: Participant, sid: str, enabled: bool
    ) -> bool | None:
        """True when it changed, False when it already was so, None when no such track."""
        track = participant.tracks.get(sid) if self.holds(participant, room) else None
        if track is None:
            return None
        if track.enabled == enabled:
            return False
        track.enabled = enabled
        event = TrackEnabled if enabled else TrackDisabled
        self._emit([event(room, participant, track)])
        return True

    # --- subscriptions ---------------------------------------------------------------------

    def wants(self, subscriber: Participant, publisher: Participant, track: Track) -> bool:
        """Whether ``subscriber`` is to receive ``publisher``'s ``track`` (rules, else auto)."""
        if subscriber is publisher:
            return False
        if subscriber.subscribe_rules is None:
            return subscriber.auto_subscribe
        return wanted(
            subscriber.subscribe_rules, publisher.identity, track.name, track.kind, TRACK_PRIORITY
        )

    def set_subscribe_rules(
        self, room: Room, participant: Participant, rules: tuple[SubscribeRule, ...]
    ) -> SubscriptionChange | None:
        """Set ``participant``'s rules; what to subscribe and unsubscribe now (None: gone).

        The owner keeps the rules and says what changes; the caller (the server) does the
        subscribing, reporting each success with ``subscribed``/``unsubscribed``."""
        if not self.holds(participant, room):
            return None
        participant.subscribe_rules = rules
        participant.rules_updated = datetime.now(UTC)
        add: list[tuple[Participant, str]] = []
        drop: list[str] = []
        published: set[str] = set()
        for other in room.participants.values():
            for track in other.tracks.values():
                published.add(track.sid)
                want = self.wants(participant, other, track)
                have = track.sid in participant.subscriptions
                if want and not have:
                    add.append((other, track.sid))
                elif have and not want:
                    drop.append(track.sid)
        drop.extend(sorted(participant.subscriptions - published))
        return SubscriptionChange(add, drop)

    def subscribed(self, participant: Participant, track_sid: str) -> None:
        participant.subscriptions.add(track_sid)

    def unsubscribed(self, participant: Participant, track_sid: str) -> None:
        participant.subscriptions.discard(track_sid)

    # --- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> Due:
        """The room rules at ``now``: who overstayed (``max-participant-duration``), whose
        reconnection window ran out (``connection-lost``), which empty rooms end."""
        removals: list[tuple[Room, Participant, str]] = []
        events: list[RosterEvent] = []
        for room in list(self.rooms.values()):
            over = set(room.overstayed(now))
            for identity in over:
                removals.append(
                    (room, room.participants[identity], Reason.MAX_PARTICIPANT_DURATION)
                )
            for p in list(room.participants.values()):
                since = p.reconnecting_since
                lapsed = since is not None and now - since >= self.reconnect_window
                if lapsed and p.identity not in over:
                    removals.append((room, p, Reason.CONNECTION_LOST))
            if room.empty_expired(now) and not room.participants:
                del self.rooms[room.name]
                events.append(RoomEnded(room, Reason.ROOM_ENDED))
        return Due(removals, self._emit(events))
