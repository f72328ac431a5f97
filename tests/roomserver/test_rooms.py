"""The rooms owner (``roomserver.rooms.Rooms``): admission, roster events, reconnection,
tracks and the room rules, exactly and with a fake clock (no sockets, no tasks)."""

from __future__ import annotations

from typing import Any

import pytest

from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver.limits import ROLE_MIXER
from mixer_ext.roomserver.rooms import (
    ParticipantLeft,
    Refusal,
    Refused,
    RoomEnded,
    Rooms,
    RosterEvent,
    Status,
)
from mixer_ext.roomserver.subscribe_rules import parse_rules


class Recorder:
    """A listener that writes down what it is told, as (event, room, identity, detail)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def on_roster(self, event: RosterEvent) -> None:
        who = getattr(event, "participant", None)
        track = getattr(event, "track", None)
        detail = getattr(event, "reason", None) or (track.sid if track else None)
        self.seen.append(
            (type(event).__name__, event.room.name, who.identity if who else None, detail)
        )

    def take(self) -> list[tuple[Any, ...]]:
        seen, self.seen = self.seen, []
        return seen


def owner(**kw: Any) -> tuple[Rooms, Recorder]:
    settings: dict[str, Any] = dict(
        max_participants=3,
        max_participant_duration=100.0,
        empty_timeout=5.0,
        mixer_identities=frozenset({"mixer"}),
        reconnect_window=30.0,
    )
    settings.update(kw)
    rooms = Rooms(**settings)
    rec = Recorder()
    rooms.attach(rec)
    return rooms, rec


def test_join_creates_the_room_and_tells_listeners_in_order() -> None:
    rooms, rec = owner()
    a = rooms.join("r", "alice", 0.0)
    assert a.replaced is None and a.participant.status is Status.CONNECTED
    assert a.participant.sid.startswith("PA") and a.room.sid.startswith("RM")
    assert rec.take() == [
        ("RoomCreated", "r", None, None),
        ("ParticipantJoined", "r", "alice", None),
    ]
    rooms.join("r", "bob", 1.0)
    assert rec.take() == [("ParticipantJoined", "r", "bob", None)]
    assert list(rooms["r"].participants) == ["alice", "bob"]
    assert rooms.resolve(a.room.sid) == "r" and rooms.resolve("RMnope") == "RMnope"
    assert rooms.count_participants() == 2


def test_a_second_connection_replaces_the_first() -> None:
    rooms, rec = owner()
    first = rooms.join("r", "alice", 0.0, connection="c1").participant
    rooms.publish_track(rooms["r"], first, "MT1", name="mic")
    rec.take()
    again = rooms.join("r", "alice", 2.0, connection="c2")
    assert again.replaced is first and first.status is Status.DISCONNECTED
    assert again.participant.sid != first.sid and again.participant.connection == "c2"
    assert rec.take() == [
        ("TrackUnpublished", "r", "alice", "MT1"),
        ("ParticipantLeft", "r", "alice", Reason.DUPLICATE_IDENTITY),
        ("ParticipantJoined", "r", "alice", None),
    ]
    # the old connection's own departure, arriving late, changes nothing
    assert not rooms.leave(rooms["r"], first, Reason.CONNECTION_LOST, 3.0)
    assert rec.take() == [] and rooms["r"].participants["alice"] is again.participant


def test_refusals_say_why_and_change_nothing() -> None:
    rooms, rec = owner()
    for name in ("a", "b", "c"):
        rooms.join("r", name, 0.0)
    rec.take()
    with pytest.raises(Refused) as full:
        rooms.join("r", "d", 1.0)
    assert full.value.refusal is Refusal.ROOM_FULL
    with pytest.raises(Refused) as reserved:
        rooms.join("r2", "mixer", 1.0)
    assert reserved.value.refusal is Refusal.IDENTITY_RESERVED
    rooms.join("r2", "mixer", 1.0, role=ROLE_MIXER)
    with pytest.raises(Refused) as held:  # a participant token never displaces a mixer
        rooms.join("r2", "mixer", 1.0)
    assert held.value.refusal is Refusal.IDENTITY_RESERVED
    with pytest.raises(Refused) as bad_room:
        rooms.join("", "x", 1.0)
    assert bad_room.value.refusal is Refusal.ROOM_NAME_INVALID
    with pytest.raises(Refused) as bad_identity:
        rooms.join("r3", "", 1.0)
    assert bad_identity.value.refusal is Refusal.IDENTITY_INVALID
    assert "r3" not in rooms and set(rooms["r"].participants) == {"a", "b", "c"}
    assert [e[0] for e in rec.take()] == ["RoomCreated", "ParticipantJoined"]  # r2's mixer


def test_tracks_publish_unpublish_enable_and_several_per_participant() -> None:
    rooms, rec = owner()
    room = rooms.join("r", "alice", 0.0).room
    alice = room.participants["alice"]
    bob = rooms.join("r", "bob", 0.0).participant
    rec.take()
    mic = rooms.publish_track(room, alice, "MT1", name="mic")
    second = rooms.publish_track(room, alice, "MT2", name="music", enabled=False)
    assert mic is not None and second is not None and not second.enabled
    assert rooms.publish_track(room, alice, "MT1") is None  # already published
    rooms.subscribed(bob, "MT1")
    assert rooms.set_track_enabled(room, alice, "MT1", False) is True
    assert rooms.set_track_enabled(room, alice, "MT1", False) is False  # no change, no event
    assert rooms.set_track_enabled(room, alice, "MT9", True) is None
    assert not rooms.enabled("alice", "MT1") and rooms.enabled("alice", "unknown")
    assert rooms.set_track_enabled(room, alice, "MT1", True) is True
    assert rooms.unpublish_track(room, alice, "MT1") is mic
    assert bob.subscriptions == set() and list(alice.tracks) == ["MT2"]
    assert rec.take() == [
        ("TrackPublished", "r", "alice", "MT1"),
        ("TrackPublished", "r", "alice", "MT2"),
        ("TrackDisabled", "r", "alice", "MT1"),
        ("TrackEnabled", "r", "alice", "MT1"),
        ("TrackUnpublished", "r", "alice", "MT1"),
    ]


def test_reconnection_keeps_the_seat_then_lapses() -> None:
    rooms, rec = owner()
    room = rooms.join("r", "alice", 0.0, connection="ws1").room
    alice = room.participants["alice"]
    rooms.publish_track(room, alice, "MT1")
    rec.take()
    assert rooms.participant_reconnecting(room, alice, 10.0)
    assert not rooms.participant_reconnecting(room, alice, 11.0)  # once
    assert alice.status is Status.RECONNECTING and "MT1" in alice.tracks
    assert rooms.participant_reconnected(room, alice, 12.0, connection="ws2")
    assert alice.status is Status.CONNECTED and alice.connection == "ws2"
    assert not rooms.participant_reconnected(room, alice, 12.5)
    assert rec.take() == [
        ("ParticipantReconnecting", "r", "alice", None),
        ("ParticipantReconnected", "r", "alice", None),
    ]
    rooms.participant_reconnecting(room, alice, 20.0)
    assert rooms.tick(49.9).removals == []
    due = rooms.tick(50.0)
    assert due.removals == [(room, alice, Reason.CONNECTION_LOST)]


def test_tick_overstay_and_empty_rooms() -> None:
    rooms, rec = owner(max_participant_duration=10.0, empty_timeout=5.0)
    room = rooms.join("r", "a", 0.0).room
    a = room.participants["a"]
    assert rooms.tick(9.9).removals == []
    assert rooms.tick(10.0).removals == [(room, a, Reason.MAX_PARTICIPANT_DURATION)]
    rooms.leave(room, a, Reason.MAX_PARTICIPANT_DURATION, 10.0)
    rec.take()
    assert rooms.tick(14.9).events == [] and "r" in rooms
    ended = rooms.tick(15.0).events
    assert [type(e) for e in ended] == [RoomEnded] and "r" not in rooms
    assert rec.take() == [("RoomEnded", "r", None, Reason.ROOM_ENDED)]


def test_end_room_and_create_room() -> None:
    rooms, rec = owner()
    made = rooms.create_room("standup", 0.0, max_participants=2, empty_timeout=60.0)
    assert made.max_participants == 2 and made.empty_timeout == 60.0
    with pytest.raises(Refused) as exists:
        rooms.create_room("standup", 0.0)
    assert exists.value.refusal is Refusal.ROOM_EXISTS
    nameless = rooms.create_room(None, 0.0)
    assert nameless.name == nameless.sid and nameless.sid.startswith("RM")
    rooms.join("standup", "a", 1.0)
    rooms.join("standup", "b", 1.0)
    rec.take()
    events = rooms.end_room(made, Reason.ROOM_ENDED, 2.0)
    assert [type(e) for e in events] == [ParticipantLeft, ParticipantLeft, RoomEnded]
    assert "standup" not in rooms and rooms.end_room(made, Reason.ROOM_ENDED, 3.0) == []
    assert rec.take()[-1] == ("RoomEnded", "standup", None, Reason.ROOM_ENDED)


def test_a_failing_listener_costs_the_others_nothing() -> None:
    _, rec = owner()

    class Broken:
        def on_roster(self, event: RosterEvent) -> None:
            raise RuntimeError("bug")

    rooms2 = Rooms(max_participants=2, max_participant_duration=1.0, empty_timeout=0.0)
    rooms2.attach(Broken())
    rooms2.attach(rec)
    rooms2.join("r", "a", 0.0)
    assert [e[0] for e in rec.take()] == ["RoomCreated", "ParticipantJoined"]


def test_subscribe_rules_say_what_changes() -> None:
    """The owner keeps a participant's Subscribe Rules and says what to (un)subscribe."""
    rooms, _ = owner()
    a = rooms.join("r", "a", 0.0).participant
    room = rooms["r"]
    b = rooms.join("r", "b", 0.0).participant
    c = rooms.join("r", "c", 0.0, auto_subscribe=False).participant
    rooms.publish_track(room, a, "MTa", name="mic")
    rooms.publish_track(room, b, "MTb", name="mic")
    assert not rooms.wants(c, a, a.tracks["MTa"])  # automaticSubscription false, no rules
    change = rooms.set_subscribe_rules(room, c, parse_rules('[{"type":"include","all":true}]'))
    assert change is not None
    assert sorted(sid for _, sid in change.subscribe) == ["MTa", "MTb"] and not change.unsubscribe
    for _, sid in change.subscribe:
        rooms.subscribed(c, sid)
    change = rooms.set_subscribe_rules(
        room, c, parse_rules('[{"type":"include","all":true},{"type":"exclude","publisher":"a"}]')
    )
    assert change is not None and (change.subscribe, change.unsubscribe) == ([], ["MTa"])
    assert not rooms.wants(a, a, a.tracks["MTa"])  # never one's own
