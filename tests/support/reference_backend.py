"""The reference-backend stack (room server, API, talkers) the Python and Node replays share."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.api_process import _Api
from tests.support.env import free_port
from tests.support.process_util import Proc, processes, start_room_server, start_talker

ACCOUNT = "AC" + "7" * 32
TOKEN = "reference-backend-auth-token"
KEY_SID = "SK" + "8" * 32
KEY_SECRET = "reference-backend-api-key-secret"
TONES = {"alice": 440.0, "bob": 660.0}
SECRET = "reference-backend-room-secret-0123456789"
ROOM = "quiz-night"


@dataclass
class Stack:
    api: _Api
    api_base: str
    room_base: str
    procs: list[Proc]
    tmp: Path
    env: dict[str, str]

    def talkers(self, room: str, seconds: int = 120) -> None:
        for name, hz in TONES.items():
            start_talker(
                self.procs, self.env, self.tmp / f"talker-{name}.log", room, name, hz, seconds
            )


@pytest.fixture(name="stack")
def stack_fixture(tmp_path: Path) -> Iterator[Stack]:
    """The room server (with its Video REST) and the API, sharing the account credentials."""
    for var in ("TWILIO_REGION", "TWILIO_EDGE"):
        os.environ.pop(var, None)
    room_port, api_port = free_port(), free_port()
    credentials = {
        "MIXER_ACCOUNT_SID": ACCOUNT,
        "MIXER_AUTH_TOKEN": TOKEN,
        "MIXER_API_KEYS": f"{KEY_SID}:{KEY_SECRET}",
    }
    env = {"MIXER_ROOM_SECRET": SECRET, "MIXER_ROOM_URL": f"ws://127.0.0.1:{room_port}"}
    api_env = {
        **env,
        **credentials,
        "MIXER_API_DATA_DIR": str(tmp_path / "data"),
        "MIXER_HLS_PLAYLIST_TYPE": "event",  # every segment stays listed: checkable
    }
    api = _Api(api_port, api_env, tmp_path / "api.log")
    with processes() as procs:
        start_room_server(procs, room_port, {**env, **credentials}, tmp_path / "room.log")
        api.start()
        try:
            yield Stack(
                api,
                f"http://127.0.0.1:{api_port}",
                f"http://127.0.0.1:{room_port}",
                procs,
                tmp_path,
                env,
            )
        finally:
            api.stop()


def unverified_claims(jwt: str) -> dict[str, Any]:
    """What the Live Player SDK does with its token: decode, never verify."""
    body = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims
