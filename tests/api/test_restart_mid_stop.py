"""An API restarted between a worker's SIGTERM and its exit loses nothing (issue 25.4).

The worker here is a real child process (a small Python program standing in for
``mixer-ext run``: it takes SIGTERM, writes its recording file, then exits when the test
says so), so the API's real ``LocalLauncher`` signals it and finds it again through
``/proc`` after the restart; the API is the real ``ControlPlane`` behind its real aiohttp
app, stopped and started again on the same database, as ``mixer-ext api`` is.

What a user checks: the MediaRecording ends ``completed`` with its size, not
``processing`` forever, whether the worker exits while the API is down or after it came
back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mixer_ext.api.client import basic_authorization
from mixer_ext.api.config import ApiSettings
from mixer_ext.api.launcher import LocalLauncher, process_start_time
from mixer_ext.api.plane import ControlPlane
from mixer_ext.api.routes import build_app

ACCOUNT = "AC" + "4" * 32
TOKEN = "restart-mid-stop-token"
AUTH = {"Authorization": basic_authorization(ACCOUNT, TOKEN)}

#: the stand-in worker: once its SIGTERM handler is set it says ``ready``; on SIGTERM it
#: writes its recording, then waits for ``go`` to exit
WORKER = """
import pathlib, signal, sys, time
out, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
term = []
signal.signal(signal.SIGTERM, lambda *_: term.append(1))
out.parent.mkdir(parents=True, exist_ok=True)
(out.parent / "ready").touch()
while not term:
    time.sleep(0.02)
out.write_bytes(b"\\0" * 1000)
while not go.exists():
    time.sleep(0.02)
"""


class StandInLauncher(LocalLauncher):
    """The real local launcher, but the child it starts is ``WORKER`` above."""

    def __init__(self, data_dir: Path, go: Path) -> None:
        super().__init__(data_dir)
        self.go = go

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        out = self.work / sid / "mix.m4a"
        child = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(out), str(self.go)], start_new_session=True
        )
        self._children[child.pid] = child
        return {"pid": child.pid, "start_time": process_start_time(child.pid)}


def _settings(tmp_path: Path) -> ApiSettings:
    return ApiSettings(account_sid=ACCOUNT, auth_token=TOKEN, api_data_dir=tmp_path)


@pytest.mark.parametrize("exits", ["while-the-api-is-down", "after-the-api-is-back"])
async def test_recording_completes_across_an_api_restart_mid_stop(
    tmp_path: Path, exits: str
) -> None:
    go = tmp_path / "go"
    first = StandInLauncher(tmp_path, go)
    plane = ControlPlane(_settings(tmp_path), "127.0.0.1", 0, first)
    client = TestClient(TestServer(build_app(plane)))
    await client.start_server()
    await plane.start()
    try:
        ctx = json.dumps({"room": {"name": "r"}, "outputs": ["file:mix.m4a"]})
        form = {"Extension": "audio-mixer-v1", "ExtensionContext": ctx}
        resp = await client.post("/v1/MediaProcessors", data=form, headers=AUTH)
        assert resp.status == 201
        zx = (await resp.json())["sid"]
        ready = first.work / zx / "ready"  # its SIGTERM handler is set
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        url = f"/internal/workers/{zx}/status?key={plane.worker_key(zx)}"
        assert (await client.post(url, json={"state": "started"})).status == 204
        resp = await client.post(
            f"/v1/MediaProcessors/{zx}", data={"Status": "ended"}, headers=AUTH
        )
        assert (await resp.json())["status"] == "ended"
        (child,) = first._children.values()
        # the worker got SIGTERM and is finishing its recording: the API goes down now
    finally:
        await client.close()
        await plane.stop()
    if exits == "while-the-api-is-down":
        go.touch()
        await asyncio.to_thread(child.wait, 10)

    again = ControlPlane(_settings(tmp_path), "127.0.0.1", 0, StandInLauncher(tmp_path, go))
    await again.start()
    try:
        if exits == "after-the-api-is-back":
            go.touch()
            await asyncio.to_thread(child.wait, 10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (rec,), _ = again.store.recordings(processor_sid=zx)
            if rec.status.value != "processing":
                break
            await asyncio.sleep(0.1)
        assert (rec.status.value, rec.media_size) == ("completed", 1000)
    finally:
        go.touch()
        await asyncio.to_thread(child.wait, 10)
        await again.stop()
