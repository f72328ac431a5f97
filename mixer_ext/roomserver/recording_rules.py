"""Which published tracks are recorded: Recording Rules, applied as the roster changes.

``RoomRecorder`` is a listener of the rooms owner (``rooms.Rooms.attach``) and the one
place that turns a room's rules into ``MediaService.start_recording``/``stop_recording``
calls; the rules' wire format and matching are ``twilio/media_rest.py``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from mixer_ext.roomserver.forward import PacketFanout
from mixer_ext.roomserver.peer import Peer
from mixer_ext.roomserver.recordings import MediaService, RoomRef
from mixer_ext.roomserver.rooms import (
    Participant,
    Room,
    RoomEnded,
    RosterEvent,
    Track,
    TrackPublished,
    TrackUnpublished,
)
from mixer_ext.roomserver.twilio import media_rest as m
from mixer_ext.roomserver.twilio.rest import now_utc

log = logging.getLogger(__name__)


@dataclass
class _RoomRules:
    ref: RoomRef
    rules: list[dict[str, object]]
    created: datetime
    updated: datetime


class RoomRecorder:
    """A roster listener: records the published audio tracks its rooms' rules select.

    ``describe(room)`` gives the room's ``RoomRef`` and whether it records from the start
    (``RecordParticipantsOnConnect`` or the server's default): its first Recording Rules
    are then ``[{"type": "include", "all": true}]``, else none (nothing recorded).  On
    ``TrackPublished`` a track the rules select gets a recording: the publisher's
    ``PacketFanout`` (either protocol: ``Peer.fanout_for``) is given its sink; on
    ``TrackUnpublished`` (also sent for every track of a participant who leaves) the
    recording finishes; on ``RoomEnded`` the room's recordings complete and the hooks may
    compose it.  ``update_rules`` re-applies new rules to every published track at once:
    a track newly selected starts a new recording, one no longer selected completes its
    own.  Muted tracks forward nothing, so a mute is a gap in the file.
    """

    def __init__(
        self, media: MediaService, describe: Callable[[Room], tuple[RoomRef, bool]]
    ) -> None:
        self.media = media
        self._describe = describe
        self._rooms: dict[str, _RoomRules] = {}
        self._sinks: dict[str, tuple[PacketFanout, Callable[[bytes, int], None]]] = {}
        self._track_room: dict[str, Room] = {}
        #: room SID -> (is recording, revision): what the SDK shows as ``room.isRecording``
        self._recording: dict[str, tuple[bool, int]] = {}
        #: told ``(room, is_recording, revision)`` when a room starts or stops recording
        self.on_change: Callable[[Room, bool, int], None] | None = None

    def _state(self, room: Room) -> _RoomRules:
        state = self._rooms.get(room.sid)
        if state is None:
            ref, record = self._describe(room)
            rules: list[dict[str, object]] = [{"type": "include", "all": True}] if record else []
            now = now_utc()
            state = self._rooms[room.sid] = _RoomRules(ref, rules, now, now)
        return state

    def rules(self, room: Room) -> tuple[list[dict[str, object]], datetime, datetime]:
        state = self._state(room)
        return state.rules, state.created, state.updated

    def update_rules(self, room: Room, rules: list[dict[str, object]]) -> None:
        """New rules for a live room, applied to its published tracks now."""
        state = self._state(room)
        state.rules = rules
        state.updated = now_utc()
        for participant in list(room.participants.values()):
            for track in list(participant.tracks.values()):
                wanted = track.kind == "audio" and m.rules_select(
                    rules, participant.identity, track.kind, track.name or track.sid
                )
                if wanted and track.sid not in self._sinks:
                    self._start(room, state.ref, participant, track)
                elif not wanted and track.sid in self._sinks:
                    self._stop(track.sid)

    def on_roster(self, event: RosterEvent) -> None:
        if isinstance(event, TrackPublished):
            track = event.track
            state = self._state(event.room)
            if track.kind == "audio" and m.rules_select(
                state.rules, event.participant.identity, track.kind, track.name or track.sid
            ):
                self._start(event.room, state.ref, event.participant, track)
        elif isinstance(event, TrackUnpublished):
            self._stop(event.track.sid)
        elif isinstance(event, RoomEnded):
            ended = self._rooms.pop(event.room.sid, None)
            self._recording.pop(event.room.sid, None)
            if ended is not None:
                self.media.room_completed(ended.ref)

    def _start(self, room: Room, ref: RoomRef, participant: Participant, track: Track) -> None:
        peer = cast(Peer | None, participant.connection)
        fanout = None if peer is None else peer.fanout_for(track.sid)
        if fanout is None:
            log.warning("recording: %s has no media to record", track.sid)
            return
        sink = self.media.start_recording(
            ref, participant.sid, participant.identity, track.sid, track.name or track.sid
        )
        if sink is not None:
            fanout.add_sink(sink)
            self._sinks[track.sid] = (fanout, sink)
            self._track_room[track.sid] = room
            self._changed(room)

    def _stop(self, track_sid: str) -> None:
        held = self._sinks.pop(track_sid, None)
        if held is not None:
            held[0].remove_sink(held[1])
            self.media.stop_recording(track_sid)
            room = self._track_room.pop(track_sid, None)
            if room is not None:
                self._changed(room)

    def recording_state(self, room: Room) -> tuple[bool, int]:
        """``(is recording, revision)`` of a room, for the SDK's ``room.isRecording``."""
        return self._recording.get(room.sid, (False, 1))

    def _changed(self, room: Room) -> None:
        now = any(r is room for r in self._track_room.values())
        was, revision = self.recording_state(room)
        if now != was:
            self._recording[room.sid] = (now, revision + 1)
            if self.on_change is not None:
                self.on_change(room, now, revision + 1)

    def is_recording(self, room_sid: str) -> bool:
        return self.media.is_recording(room_sid)
