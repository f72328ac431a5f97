"""Shared by the API tests: resource builders and the in-process control plane.

``processor``/``streamer`` build resources with every field set (a test overrides what it
checks); ``_client`` serves a real ``ControlPlane`` with ``RecordingLauncher``, which
starts no process and records what it was asked (a unit-test stand-in for workers).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from mixer_ext.api import resources as r
from mixer_ext.api.client import basic_authorization
from mixer_ext.api.config import ApiSettings
from mixer_ext.api.launcher import LocalLauncher
from mixer_ext.api.plane import ControlPlane
from mixer_ext.api.routes import build_app

PUBLIC = "http://api.example:8080"
#: the account of the resources ``processor``/``streamer`` build
RESOURCE_ACCOUNT = "AC" + "a" * 32
CTX = '{"room": {"name": "r1"}, "outputs": ["VJ' + "0" * 32 + '"]}'


def processor(**kw: object) -> r.MediaProcessor:
    base = r.MediaProcessor(
        sid=r.new_sid("ZX"),
        account_sid=RESOURCE_ACCOUNT,
        extension="audio-mixer-v1",
        extension_context=CTX,
        status=r.ProcessorStatus.STARTED,
        ended_reason=None,
        error_message=None,
        status_callback="http://cb.example/hook",
        status_callback_method="POST",
        max_duration=300,
        date_created=1_700_000_000.5,
        date_updated=1_700_000_000.5,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def streamer(**kw: object) -> r.PlayerStreamer:
    base = r.PlayerStreamer(
        sid=r.new_sid("VJ"),
        account_sid=RESOURCE_ACCOUNT,
        video=True,
        status=r.StreamerStatus.CREATED,
        ended_reason=None,
        status_callback=None,
        status_callback_method="POST",
        max_duration=300,
        date_created=1_700_000_000.0,
        date_updated=1_700_000_000.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


#: the in-process plane's account, auth token and API key
ACCOUNT = "AC" + "2" * 32
TOKEN = "unit-auth-token"
KEY_SID = "SK" + "3" * 32


class RecordingLauncher(LocalLauncher):
    """Starts no process: records start/stop calls (unit-test stand-in, see docstring)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.started: list[str] = []
        self.stopped: list[dict[str, Any]] = []
        self.running: set[int] = set()

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        self.started.append(sid)
        pid = 10_000 + len(self.started)
        self.running.add(pid)
        return {"pid": pid, "start_time": 1}

    def stop(self, handle: dict[str, Any]) -> None:
        self.stopped.append(handle)
        self.running.discard(handle["pid"])

    def alive(self, handle: dict[str, Any]) -> bool:
        return handle["pid"] in self.running

    adopt = alive


async def _client(tmp_path: Path, **cfg: Any) -> tuple[TestClient[Any, Any], ControlPlane]:
    settings = ApiSettings(
        account_sid=ACCOUNT,
        auth_token=TOKEN,
        api_keys=f"{KEY_SID}:key-secret",
        api_data_dir=tmp_path,
        api_public_url="https://media.example.com",
        **cfg,
    )
    plane = ControlPlane(settings, "127.0.0.1", 0, RecordingLauncher(tmp_path))
    client = TestClient(TestServer(build_app(plane)))
    await client.start_server()
    return client, plane


#: HTTP Basic with the account SID and auth token, what the twilio client sends
AUTH = {"Authorization": basic_authorization(ACCOUNT, TOKEN)}
