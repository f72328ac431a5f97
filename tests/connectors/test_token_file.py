"""The worker's room token from a file (``MIXER_ROOM_TOKEN_FILE``, issue 16 item 3).

The chart's init container mints a room-scoped mixer-role token into an in-memory
volume (``mixer-ext token ... --output FILE``) so the worker never holds the room
server's signing secret; the worker reads the file once at start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixer_ext.connectors.factory import check_room_settings, read_room_token_file
from mixer_ext.errors import ConfigError
from mixer_ext.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtIn0.c2lnbmF0dXJl"


def _settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


def test_the_token_is_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    settings = read_room_token_file(_settings(room_token_file=path))
    assert settings.room_token is not None
    assert settings.room_token.get_secret_value() == TOKEN
    check_room_settings(settings)
    # reading again (make_connector does, for every join) is a no-op
    assert read_room_token_file(settings) is settings


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "cannot read"), ("", "is empty"), ("  \n", "is empty"), ("a b", "more than one")],
)
def test_a_bad_file_is_one_line_naming_the_setting(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        read_room_token_file(_settings(room_token_file=path))
    message = str(exc.value)
    assert message.startswith("MIXER_ROOM_TOKEN_FILE: ") and says in message, message
    assert "\n" not in message


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    with pytest.raises(ConfigError, match="not both"):
        read_room_token_file(_settings(room_token_file=path, room_token="other"))


def test_a_token_file_alone_is_enough_to_join_the_embedded_server(tmp_path: Path) -> None:
    check_room_settings(_settings(room_token_file=tmp_path / "token"))
    with pytest.raises(ConfigError, match="MIXER_ROOM_TOKEN_FILE"):
        check_room_settings(_settings())


@pytest.mark.slow
def test_mixer_ext_run_refuses_an_unreadable_token_file_in_one_line(tmp_path: Path) -> None:
    """The real CLI: exit 2, one line naming the setting, nothing connected."""
    context = tmp_path / "context.json"
    context.write_text('{"room": {"name": "r1"}, "outputs": ["hls:main"]}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    env["MIXER_ROOM_TOKEN_FILE"] = str(tmp_path / "missing")
    proc = subprocess.run(
        [sys.executable, "-m", "mixer_ext", "run", "--context", str(context)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MIXER_ROOM_TOKEN_FILE" in lines[0], proc.stderr
