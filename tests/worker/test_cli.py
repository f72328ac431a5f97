"""``mixer-ext run`` refuses a bad context in one line, before anything connects."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.env import ROOT, free_port, mixer_ext_cmd

pytestmark = pytest.mark.slow

GOOD = {"room": {"name": "RM1"}, "outputs": ["hls:main"]}


def _run(context: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "MIXER_HLS_DIR": str(tmp_path / "hls"),
        "MIXER_ROOM_SECRET": "s",
        # nothing listens there: a run that got past validation would try to connect
        "MIXER_ROOM_URL": f"ws://127.0.0.1:{free_port()}",
        **env,
    }
    return subprocess.run(
        [*mixer_ext_cmd(), "run", "--context", context],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"outputs": ["hls:main"]}, "room"),
        ({"room": {"name": "RM1"}, "outputs": []}, "outputs"),
        ({**GOOD, "audioBitrate": 1000}, "audioBitrate"),
        ({**GOOD, "audioBitrate": 16}, "audioBitrate"),
        ({**GOOD, "maxParticipantDuration": 90_000}, "maxParticipantDuration"),
        ({"room": {"name": "RM1"}, "outputs": ["srt://host:9000"]}, "outputs[0]: unknown output"),
        ('{"room": {"name": "RM1"}, "outputs": ["hls:m', "not valid JSON"),
    ],
)
def test_bad_context_exits_with_one_line(
    context: dict[str, object] | str, expected: str, tmp_path: Path
) -> None:
    text = context if isinstance(context, str) else json.dumps(context)
    proc = _run(text, tmp_path)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "hls").exists(), "a refused context must create no output"


def test_missing_room_credentials_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    proc = subprocess.run(
        [*mixer_ext_cmd(), "run", "--context", json.dumps(GOOD)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "MIXER_HLS_DIR": str(tmp_path / "hls")},
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "MIXER_ROOM_SECRET" in proc.stderr
    assert not (tmp_path / "hls").exists()


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    proc = _run(json.dumps(GOOD), tmp_path, MIXER_JITTER_BUFFER="huge")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "MIXER_JITTER_BUFFER" in proc.stderr


def test_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [*mixer_ext_cmd(), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0
    for cmd in ("run", "room-server", "token", "talker", "demo"):
        assert cmd in proc.stdout


def test_context_on_stdin_is_read_and_checked(tmp_path: Path) -> None:
    """``--context -`` reads the context from stdin (stream keys stay out of argv)."""
    env = {**os.environ, "MIXER_HLS_DIR": str(tmp_path / "hls"), "MIXER_ROOM_SECRET": "s"}
    bad = {**GOOD, "audioBitrate": 1000, "outputs": ["rtmp://live.example.com/app/SECRETKEY"]}
    proc = subprocess.run(
        [*mixer_ext_cmd(), "run", "--context", "-"],
        input=json.dumps(bad),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "context on stdin: audioBitrate" in lines[0], proc.stderr
    assert "SECRETKEY" not in proc.stderr
    empty = subprocess.run(
        [*mixer_ext_cmd(), "run", "--context", "-"],
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert empty.returncode == 2 and "context on stdin" in empty.stderr, empty.stderr
