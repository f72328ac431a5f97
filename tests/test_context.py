"""The extension context: accepted shapes and one-line errors naming the field."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mixer_ext.context import (
    FileOutputSpec,
    HlsOutputSpec,
    RtmpOutputSpec,
    load_context,
    parse_context,
    parse_output,
)
from mixer_ext.errors import ConfigError


def test_minimal_context_gets_defaults() -> None:
    ctx = load_context('{"room": {"name": "RM123"}, "outputs": ["hls:main"]}')
    assert ctx.room.name == "RM123"
    assert ctx.identity == "audio-mixer-v1"
    assert ctx.audio_bitrate == 128
    assert ctx.max_participant_duration is None
    assert ctx.effective_max_duration(14_400) == 14_400
    assert ctx.output_specs == [HlsOutputSpec("main")]


def test_full_context_from_file(tmp_path: Path) -> None:
    f = tmp_path / "ctx.json"
    f.write_text(
        json.dumps(
            {
                "room": {"name": "RM1"},
                "identity": "mixer",
                "outputs": ["VJ" + "ab" * 16, "rtmps://live.example/app/sk_123", "file:/r/x.m4a"],
                "audioBitrate": 96,
                "maxParticipantDuration": 86_400,
            }
        )
    )
    ctx = load_context(str(f))
    assert ctx.identity == "mixer"
    assert ctx.audio_bitrate == 96
    assert ctx.effective_max_duration(14_400) == 86_400
    specs = ctx.output_specs
    assert specs[0] == HlsOutputSpec("VJ" + "ab" * 16)
    assert isinstance(specs[1], RtmpOutputSpec)
    assert specs[1].label == "rtmps://live.example/app/***"
    assert specs[2] == FileOutputSpec(Path("/r/x.m4a"), "mp4")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"outputs": ["hls:a"]}', "room: required field is missing"),
        ('{"room": {"name": ""}, "outputs": ["hls:a"]}', "room.name: "),
        ('{"room": {"name": "R"}, "outputs": []}', "outputs: "),
        ('{"room": {"name": "R"}}', "outputs: required field is missing"),
        ('{"room": {"name": "R"}, "outputs": ["hls:a"], "audioBitrate": 8}', "audioBitrate: "),
        ('{"room": {"name": "R"}, "outputs": ["hls:a"], "audioBitrate": 999}', "audioBitrate: "),
        ('{"room": {"name": "R"}, "outputs": ["hls:a"], "audioBitrate": "128"}', "audioBitrate: "),
        (
            '{"room": {"name": "R"}, "outputs": ["hls:a"], "maxParticipantDuration": 86401}',
            "maxParticipantDuration: ",
        ),
        ('{"room": {"name": "R"}, "outputs": ["hls:a", "ftp://x/y"]}', "outputs[1]: unknown"),
        ('{"room": {"name": "R", "sid": "x"}, "outputs": ["hls:a"]}', "room.sid: unknown field"),
        ('{"room": {"name": "R"}, "outputs": ["hls:a"], "video": 1, "identity": ""}', "identity: "),
        ('{"room": {"name": "R"}, "outputs": ["hls:a", "hls:a"]}', "outputs[1]: duplicate"),
        ('{"room": {"name": "R"}, "outputs": ["file:x.wav"]}', "outputs[0]: recording"),
        ('{"room": {"name": "R", "outputs": ["hls:a"]', "not valid JSON"),
    ],
)
def test_bad_context_is_one_line_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_context(text)
    msg = str(info.value)
    assert expected in msg
    assert "\n" not in msg


def test_unknown_top_level_keys_are_ignored_and_logged_once_by_name(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """As the hosted service: Twilio's reference backends sent ``video`` and ``resolution``."""
    text = (
        '{"room": {"name": "RM' + "a" * 32 + '"}, "outputs": ["VJ' + "b" * 32 + '"], '
        '"video": false, "resolution": "1920x1080"}'
    )
    f = tmp_path / "ctx.json"
    f.write_text(text)
    with caplog.at_level(logging.INFO, logger="mixer_ext.context"):
        ctx = load_context(str(f))
    assert ctx.room.name == "RM" + "a" * 32 and ctx.identity == "audio-mixer-v1"
    lines = [r for r in caplog.records if "ignoring unknown" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "'resolution', 'video'" in lines[0].getMessage()
    # a stored context read again says nothing
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixer_ext.context"):
        parse_context(text)
    assert not caplog.records


def test_truncated_inline_json_is_invalid_json_not_missing_file() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_context('{"room": {"name": "RM')


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_context(str(tmp_path / "nope.json"))


def test_rtmp_key_never_in_error() -> None:
    with pytest.raises(ValueError) as info:
        parse_output("rtmp://host/onlykey")  # no application: refused, and the key not shown
    assert "rtmp://host/***" in str(info.value)
    assert "onlykey" not in str(info.value)
    with pytest.raises(ConfigError) as info2:
        load_context(
            '{"room": {"name": "R"}, "outputs": ["rtmp://h/app/SECRETKEY", '
            '"rtmp://h/app/SECRETKEY"]}'
        )
    assert "SECRETKEY" not in str(info2.value)


def test_context_must_be_an_object(tmp_path: Path) -> None:
    f = tmp_path / "list.json"
    f.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_context(str(f))
