"""The roster: room events in, mixer changes out (synchronous, no I/O)."""

from __future__ import annotations

from mixer_ext.connectors.base import (
    ParticipantJoined,
    ParticipantLeft,
    TrackEnabledChanged,
    TrackSubscribed,
    TrackUnsubscribed,
)
from mixer_ext.core.roster import Attach, Detach, Enabled, Joined, Left, Roster

BOT = "audio-mixer-v1"
T = object()  # a track stand-in: the roster only passes it on


def sub(who: str, sid: str, enabled: bool = True) -> TrackSubscribed:
    return TrackSubscribed(who, sid, T, enabled)  # type: ignore[arg-type]


def test_the_bot_itself_is_never_mixed() -> None:
    r = Roster(BOT)
    assert r.apply(ParticipantJoined(BOT)) == []
    assert r.apply(sub(BOT, "MT0")) == []
    assert r.participants == []


def test_join_subscribe_mute_unsubscribe_leave() -> None:
    r = Roster(BOT)
    assert r.apply(ParticipantJoined("alice")) == [Joined("alice")]
    assert r.apply(ParticipantJoined("alice")) == []  # repeated
    assert r.apply(sub("alice", "MT1")) == [Attach("alice", "MT1", T, True)]
    assert r.apply(TrackEnabledChanged("alice", "MT1", False)) == [Enabled("alice", "MT1", False)]
    assert r.apply(TrackEnabledChanged("alice", "MT1", False)) == []  # no change
    assert r.tracks("alice") == {"MT1": False}
    assert r.apply(TrackUnsubscribed("alice", "MT1")) == [Detach("alice", "MT1")]
    assert r.apply(TrackUnsubscribed("alice", "MT1")) == []
    assert r.apply(ParticipantLeft("alice", "left")) == [Left("alice", "left")]
    assert r.apply(ParticipantLeft("alice", "left")) == []


def test_a_track_announces_its_participant() -> None:
    r = Roster(BOT)
    assert r.apply(sub("bob", "MT2")) == [Joined("bob"), Attach("bob", "MT2", T, True)]
    assert r.participants == ["bob"]


def test_a_mute_before_the_track_is_kept_for_it() -> None:
    r = Roster(BOT)
    r.apply(ParticipantJoined("carol"))
    assert r.apply(TrackEnabledChanged("carol", "MT3", False)) == []
    assert r.apply(sub("carol", "MT3", enabled=True)) == [Attach("carol", "MT3", T, False)]
    # a leave forgets what was kept for the participant
    r.apply(TrackEnabledChanged("dave", "MT4", False))
    r.apply(ParticipantLeft("dave", "left"))
    assert r.apply(sub("dave", "MT4")) == [Joined("dave"), Attach("dave", "MT4", T, True)]


def test_clear_lets_everyone_leave_once() -> None:
    r = Roster(BOT)
    r.apply(sub("alice", "MT1"))
    r.apply(sub("bob", "MT2"))
    assert r.clear("bot-left") == [Left("alice", "bot-left"), Left("bob", "bot-left")]
    assert r.clear("bot-left") == []
    assert r.apply(ParticipantJoined("alice")) == [Joined("alice")]
