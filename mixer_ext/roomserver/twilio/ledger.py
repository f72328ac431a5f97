"""The Video REST's room and participant records, kept by the rooms owner's roster events.

``RoomLedger`` is a listener of ``rooms.Rooms`` (sans-I/O): completed rooms and departed
participants stay fetchable (the newest ``HISTORY`` rooms), and each change sends its
status callback (``callbacks.StatusCallbacks``) as it happens.  Served by ``rest_routes``.
"""

from __future__ import annotations

from collections import OrderedDict

from mixer_ext.roomserver.rooms import (
    ParticipantJoined,
    ParticipantLeft,
    ParticipantReconnected,
    ParticipantReconnecting,
    Room,
    RoomCreated,
    RoomEnded,
    RosterEvent,
    TrackDisabled,
    TrackEnabled,
    TrackPublished,
    TrackUnpublished,
)
from mixer_ext.roomserver.twilio import rest as r
from mixer_ext.roomserver.twilio.callbacks import StatusCallbacks

HISTORY = 1000


class RoomLedger:
    """Room and participant records, kept by the rooms owner's roster events (a listener)."""

    def __init__(
        self, account_sid: str, callbacks: StatusCallbacks, *, record_by_default: bool = False
    ) -> None:
        self.account_sid = account_sid
        self.callbacks = callbacks
        #: rooms not created over REST (or without RecordParticipantsOnConnect) record if set
        self.record_by_default = record_by_default
        self.rooms: OrderedDict[str, r.RoomRecord] = OrderedDict()

    def for_live(self, room: Room) -> r.RoomRecord:
        """The record of a live room (made on first sight: rooms the SDK or a bot created)."""
        record = self.rooms.get(room.sid)
        if record is not None:
            return record
        record = r.RoomRecord(
            sid=room.sid,
            unique_name=room.name,
            account_sid=self.account_sid,
            max_participants=room.max_participants,
            max_participant_duration=int(room.max_participant_duration),
            empty_room_timeout=max(1, round(room.empty_timeout / 60)),
            record_participants_on_connect=self.record_by_default,
        )
        self.rooms[record.sid] = record
        while len(self.rooms) > HISTORY:
            self.rooms.popitem(last=False)
        return record

    def on_roster(self, event: RosterEvent) -> None:
        record = self.for_live(event.room)
        emit = self.callbacks.room_event
        if isinstance(event, RoomEnded):
            if record.status == "in-progress":
                record.status, record.end = "completed", r.now_utc()
                emit(record, "room-ended")
            return
        if isinstance(event, RoomCreated):
            return
        who = event.participant
        if isinstance(event, ParticipantJoined):
            p = r.ParticipantRecord(sid=who.sid, identity=who.identity)
            record.participants[p.sid] = p
            emit(record, "participant-connected", p)
            return
        found = record.participants.get(who.sid)
        if found is None:
            return
        p = found
        if isinstance(event, ParticipantLeft):
            p.status, p.end = "disconnected", r.now_utc()
            emit(record, "participant-disconnected", p)
        elif isinstance(event, ParticipantReconnecting):
            p.status = "reconnecting"
        elif isinstance(event, ParticipantReconnected):
            p.status = "connected"
        elif isinstance(event, TrackPublished):
            t = r.TrackRecord(
                sid=event.track.sid,
                name=event.track.name,
                kind=event.track.kind,
                enabled=event.track.enabled,
            )
            p.tracks[t.sid] = t
            emit(record, "track-added", p, t)
        elif isinstance(event, TrackUnpublished):
            gone = p.tracks.pop(event.track.sid, None)
            if gone is not None:
                emit(record, "track-removed", p, gone)
        elif isinstance(event, TrackEnabled | TrackDisabled):
            known = p.tracks.get(event.track.sid)
            if known is not None and known.enabled != event.track.enabled:
                known.enabled = event.track.enabled
                emit(record, "track-enabled" if known.enabled else "track-disabled", p, known)

    def find(self, key: str) -> r.RoomRecord:
        if key in self.rooms:
            return self.rooms[key]
        for record in reversed(self.rooms.values()):  # a unique name: the in-progress room
            if record.unique_name == key and record.status == "in-progress":
                return record
        raise r.not_found(f"/Rooms/{key[:40]}")
