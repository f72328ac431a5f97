"""The SDK's view of the room and the reconciliation of a client's tracks
(``roomserver.twilio.roomview``): sans-I/O, driven by the real rooms owner's events."""

from __future__ import annotations

from mixer_ext.connectors.base import Reason
from mixer_ext.roomserver.rooms import Rooms, RosterEvent
from mixer_ext.roomserver.twilio import errors as e
from mixer_ext.roomserver.twilio import signaling as s
from mixer_ext.roomserver.twilio.roomview import LocalTracks, RemoteView


class Updates:
    """alice's view, fed every roster event about someone else; what the SDK would be sent."""

    def __init__(self, view: RemoteView) -> None:
        self.view = view
        self.sent: list[tuple[str, int, str, list[tuple[str, bool]]]] = []

    def on_roster(self, event: RosterEvent) -> None:
        who = getattr(event, "participant", None)
        if who is not None and who.identity == "alice":
            return  # the server never tells a client about itself
        remote = self.view.on_roster(event)
        if remote is not None:
            tracks = [(t.sid, t.enabled) for t in remote.tracks]
            self.sent.append((remote.identity, remote.revision, remote.state, tracks))


def _rooms() -> Rooms:
    return Rooms(max_participants=10, max_participant_duration=3600, empty_timeout=60)


def test_remote_view_follows_the_roster_with_rising_revisions() -> None:
    rooms = _rooms()
    alice = rooms.join("r", "alice", 0.0).participant
    bob = rooms.join("r", "bob", 0.0).participant
    room = rooms["r"]
    rooms.publish_track(room, bob, "MTb1", name="mic")
    view = RemoteView()
    view.seed(room, alice)  # what ``connected`` carries
    assert [(p.identity, p.revision, [t.sid for t in p.tracks]) for p in view.participants()] == [
        ("bob", 1, ["MTb1"])
    ]
    updates = Updates(view)
    rooms.attach(updates)
    rooms.set_track_enabled(room, bob, "MTb1", False)
    rooms.publish_track(room, bob, "MTb2", name="second")
    rooms.unpublish_track(room, bob, "MTb1")
    rooms.participant_reconnecting(room, bob, 1.0)
    rooms.participant_reconnected(room, bob, 2.0)
    carol = rooms.join("r", "carol", 3.0).participant
    rooms.leave(room, carol, Reason.LEFT, 4.0)
    assert updates.sent == [
        ("bob", 2, "connected", [("MTb1", False)]),
        ("bob", 3, "connected", [("MTb1", False), ("MTb2", True)]),
        ("bob", 4, "connected", [("MTb2", True)]),
        ("bob", 5, "reconnecting", [("MTb2", True)]),
        ("bob", 6, "connected", [("MTb2", True)]),
        ("carol", 1, "connected", []),
        ("carol", 2, "disconnected", []),
    ]
    assert [p.identity for p in view.participants()] == ["bob"]


def test_remote_view_ignores_what_the_sdk_does_not_show() -> None:
    rooms = _rooms()
    alice = rooms.join("r", "alice", 0.0).participant
    room = rooms["r"]
    view = RemoteView()
    view.seed(room, alice)
    updates = Updates(view)
    rooms.attach(updates)
    # an unknown participant's track (joined before the view was seeded, then forgotten)
    bob = rooms.join("r", "bob", 0.0).participant
    view.remotes.clear()
    rooms.publish_track(room, bob, "MTb1", name="mic")
    rooms.end_room(room, Reason.ROOM_ENDED, 1.0)  # room events, a leave of someone unknown
    assert updates.sent == [("bob", 1, "connected", [])]


def _track(tid: str, kind: str = "audio", enabled: bool = True) -> s.LocalTrack:
    return s.LocalTrack(id=tid, kind=kind, name=f"n-{tid}", enabled=enabled)


def _state(revision: int, *tracks: s.LocalTrack) -> s.LocalParticipant:
    return s.LocalParticipant(revision=revision, tracks=tracks)


def test_local_tracks_reconcile_publish_unpublish_and_refusals() -> None:
    local = LocalTracks()
    first = local.apply(_state(1, _track("a1"), _track("cam", "video"), _track("d1", "data")))
    assert first is not None and first.changed
    assert set(first.audio) == {"a1"} and set(first.data) == {"d1"}
    assert local.published["a1"].startswith("MT") and local.data["d1"].startswith("MT")
    revision, tracks = local.published_state()
    assert revision == 1
    verdicts = {t.id: (t.sid is not None, t.error) for t in tracks}
    assert verdicts == {
        "a1": (True, None),
        "d1": (True, None),
        "cam": (False, e.TRACK_KIND_NOT_SUPPORTED),
    }
    assert local.apply(_state(1, _track("a1"))) is None  # not newer: ignored
    # muting changes no verdict; the SID stays
    a1 = local.published["a1"]
    mute = local.apply(
        _state(2, _track("a1", enabled=False), _track("cam", "video"), _track("d1", "data"))
    )
    assert mute is not None and not mute.changed and local.published["a1"] == a1
    assert mute.audio["a1"].enabled is False and local.published_state()[0] == 1
    # switching microphones: the old track's SID goes, a new one comes; camera and data gone
    d1 = local.data["d1"]
    switch = local.apply(_state(3, _track("a2")))
    assert switch is not None and switch.changed
    assert switch.unpublished == [a1] and switch.unpublished_data == [d1]
    assert set(local.published) == {"a2"} and local.published["a2"] != a1
    revision, tracks = local.published_state()
    assert revision == 2 and [t.id for t in tracks] == ["a2"]
