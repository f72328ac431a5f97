"""The Recordings/Compositions wire formats and the composition state machine (sans-I/O)."""

from __future__ import annotations

import pytest

from mixer_ext.roomserver.twilio import media_rest as m
from mixer_ext.roomserver.twilio.rest import RestError, parse_room_create


def composition() -> m.CompositionRecord:
    return m.CompositionRecord(
        sid="CJ1", account_sid="AC1", room_sid="RM1", audio_sources=["*"],
        audio_sources_excluded=[], trim=True, format="mp4", key="compositions/CJ1.mp4",
    )  # fmt: skip


def test_composition_states_and_their_callbacks() -> None:
    c = composition()
    assert m.composition_step(c, "progress") is None  # not started: ignored
    assert m.composition_step(c, "start") == "composition-started"
    assert m.composition_step(c, "progress") == "composition-progress"
    assert m.composition_step(c, "complete") == "composition-available"
    assert c.status == "completed" and c.completed is not None
    assert m.composition_step(c, "fail") is None
    assert m.composition_step(c, "delete") is None and c.status == "deleted"
    assert m.composition_step(c, "delete") is None
    failed = composition()
    assert m.composition_step(failed, "fail") == "composition-failed"


def test_composition_create_parsing() -> None:
    spec = m.parse_composition_create(
        {"RoomSid": ["RM1"], "AudioSources": ["alice*", "bob"], "Trim": ["false"]}
    )
    assert spec.audio_sources == ["alice*", "bob"] and spec.trim is False
    assert spec.format == "webm"
    with pytest.raises(RestError) as e:
        m.parse_composition_create(
            {"RoomSid": ["RM1"], "AudioSources": ["*"], "VideoLayout": ['{"grid":{}}']}
        )
    assert e.value.code == m.NO_VIDEO and "VideoLayout" in e.value.message
    for bad, field in (
        ({"AudioSources": ["*"]}, "RoomSid"),
        ({"RoomSid": ["RM1"]}, "AudioSources"),
        ({"RoomSid": ["RM1"], "AudioSources": ["*"], "Format": ["mkv"]}, "Format"),
        ({"RoomSid": ["RM1"], "AudioSources": ["*"], "Trim": ["maybe"]}, "Trim"),
        (
            {"RoomSid": ["RM1"], "AudioSources": ["*"], "StatusCallback": ["ftp://x"]},
            "StatusCallback",
        ),
    ):
        with pytest.raises(RestError, match=field):
            m.parse_composition_create(bad)


def test_record_participants_on_connect_is_taken() -> None:
    assert (
        parse_room_create(
            {"RecordParticipantsOnConnect": "true"}, 50
        ).record_participants_on_connect
        is True
    )
    assert (
        parse_room_create(
            {"RecordParticipantsOnConnect": "false"}, 50
        ).record_participants_on_connect
        is False
    )
    assert parse_room_create({}, 50).record_participants_on_connect is None
    with pytest.raises(RestError) as e:
        parse_room_create({"RecordParticipantsOnConnect": "yes"}, 50)
    assert e.value.code == 53114


def test_recording_rendering_as_the_client_reads_it() -> None:
    rec = m.RecordingRecord(
        sid="RT1", account_sid="AC1", room_sid="RM1", participant_sid="PA1", source_sid="MT1",
        track_name="mic", key="recordings/RM1/RT1.mka", offset_ms=1500, status="completed",
        duration=0.4, size=10,
    )  # fmt: skip
    body = m.render_recording(rec, "http://h", room_scoped=True)
    assert body["duration"] == 1  # sub-second: 1
    assert body["url"] == "http://h/v1/Rooms/RM1/Recordings/RT1"
    assert body["links"]["media"].endswith("/RT1/Media") and body["offset"] == 1500
    assert (
        m.render_recording(rec, "http://h", room_scoped=False)["url"]
        == "http://h/v1/Recordings/RT1"
    )


def test_recording_rules_grammar_and_selection() -> None:
    rules = m.parse_recording_rules(
        {"Rules": ['[{"type": "include", "all": true}, {"type": "exclude", "publisher": "alice"}]']}
    )
    assert not m.rules_select(rules, "alice", "audio", "mic")
    assert m.rules_select(rules, "bob", "audio", "mic")
    only = m.parse_recording_rules(
        {"Rules": ['{"rules": [{"type": "include", "publisher": "bob", "track": "mic"}]}']}
    )
    assert m.rules_select(only, "bob", "audio", "mic")
    assert not m.rules_select(only, "bob", "audio", "screen")
    assert not m.rules_select(only, "carol", "audio", "mic")
    assert not m.rules_select([], "bob", "audio", "mic")  # no rules: nothing recorded
    for bad in (
        "nope",
        '[{"type": "maybe", "all": true}]',
        '[{"type": "include"}]',
        '[{"type": "include", "all": true, "kind": "audio"}]',
        '[{"type": "include", "kind": "smell"}]',
        '[{"type": "include", "room": "x"}]',
    ):
        with pytest.raises(RestError) as e:
            m.parse_recording_rules({"Rules": [bad]})
        assert e.value.status == 400, bad
