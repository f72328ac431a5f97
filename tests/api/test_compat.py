"""What the hosted API took from Twilio's own reference backends, in-process.

Contexts with keys the audio mixer does not know (``video``, ``resolution``), ``Status``
in upper case, ``audio-mixer-v2``'s default identity, and MediaRecordings' ``source_sid``.
The launcher is ``RecordingLauncher`` (tests/api/test_routes.py: a unit-test stand-in that
starts no worker and records what it was handed); tests/e2e/test_api_reference_backend.py
replays the same calls against real workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.api import resources as r
from tests.support.api import AUTH, RecordingLauncher, _client

ROOM_SID = "RM" + "c" * 32


class ContextLauncher(RecordingLauncher):
    """RecordingLauncher that also keeps the context text each worker would get."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.contexts: list[str] = []

    def start(self, sid: str, context_text: str, env: dict[str, str]) -> dict[str, Any]:
        self.contexts.append(context_text)
        return super().start(sid, context_text, env)


async def test_reference_backend_context_and_upper_case_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, plane = await _client(tmp_path)
    launcher = plane.launcher = ContextLauncher(tmp_path)
    try:
        vj = (
            await (
                await client.post("/v1/PlayerStreamers", data={"Video": "false"}, headers=AUTH)
            ).json()
        )["sid"]
        ctx = json.dumps(
            {"room": {"name": ROOM_SID}, "outputs": [vj], "video": False, "resolution": "640x480"}
        )
        with caplog.at_level(logging.INFO, logger="mixer_ext.context"):
            resp = await client.post(
                "/v1/MediaProcessors",
                data={"Extension": "audio-mixer-v2", "ExtensionContext": ctx},
                headers=AUTH,
            )
        body = await resp.json()
        assert resp.status == 201, body
        assert body["extension_context"] == ctx  # echoed verbatim
        ignored = [x.getMessage() for x in caplog.records if "ignoring unknown" in x.getMessage()]
        assert len(ignored) == 1 and "'resolution', 'video'" in ignored[0]
        # v2 joins as audio-mixer-v2 unless the context names an identity
        handed = json.loads(launcher.contexts[-1])
        assert handed["identity"] == "audio-mixer-v2" and handed["video"] is False
        zx = body["sid"]

        # list filters and the end update take Twilio's enum values in any case
        page = await (
            await client.get("/v1/MediaProcessors", params={"Status": "STARTED"}, headers=AUTH)
        ).json()
        assert [p["sid"] for p in page["media_processors"]] == [zx]
        resp = await client.post(
            f"/v1/MediaProcessors/{zx}", data={"Status": "ENDED"}, headers=AUTH
        )
        assert resp.status == 200 and (await resp.json())["status"] == "ended"
        resp = await client.post(
            f"/v1/PlayerStreamers/{vj}", data={"Status": "Ended"}, headers=AUTH
        )
        assert resp.status == 200 and (await resp.json())["status"] == "ended"
        resp = await client.post(f"/v1/PlayerStreamers/{vj}", data={"Status": "gone"}, headers=AUTH)
        assert resp.status == 400 and "'gone'" in (await resp.json())["message"]

        # an explicit identity stands; v1 keeps its own default
        vj2 = (await (await client.post("/v1/PlayerStreamers", headers=AUTH)).json())["sid"]
        ctx2 = json.dumps({"room": {"name": "r2"}, "outputs": [vj2], "identity": "bot"})
        resp = await client.post(
            "/v1/MediaProcessors",
            data={"Extension": "audio-mixer-v2", "ExtensionContext": ctx2},
            headers=AUTH,
        )
        assert resp.status == 201 and launcher.contexts[-1] == ctx2

        # a known key keeps its strict type: one line naming it
        vj3 = (await (await client.post("/v1/PlayerStreamers", headers=AUTH)).json())["sid"]
        bad = json.dumps({"room": {"name": "r"}, "outputs": [vj3], "audioBitrate": "128"})
        resp = await client.post(
            "/v1/MediaProcessors",
            data={"Extension": "audio-mixer-v1", "ExtensionContext": bad},
            headers=AUTH,
        )
        err = await resp.json()
        assert resp.status == 400 and err["code"] == 21200
        assert err["message"].startswith("ExtensionContext: audioBitrate: ")
    finally:
        await client.close()
        plane.store.close()


async def test_recording_source_sid_is_the_room_sid(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path)
    try:
        made = []
        for room in (ROOM_SID, "by-unique-name"):
            ctx = json.dumps({"room": {"name": room}, "outputs": [f"file:{room}.m4a"]})
            resp = await client.post(
                "/v1/MediaProcessors",
                data={"Extension": "audio-mixer-v1", "ExtensionContext": ctx},
                headers=AUTH,
            )
            assert resp.status == 201
            made.append((await resp.json())["sid"])
        page = await (
            await client.get("/v1/MediaRecordings", params={"SourceSid": ROOM_SID}, headers=AUTH)
        ).json()
        recs = page["media_recordings"]
        assert [x["processor_sid"] for x in recs] == [made[0]]
        assert recs[0]["source_sid"] == ROOM_SID
        assert page["meta"]["url"].count("SourceSid=" + ROOM_SID) == 1
        other = await (
            await client.get("/v1/MediaRecordings", params={"ProcessorSid": made[1]}, headers=AUTH)
        ).json()
        assert other["media_recordings"][0]["source_sid"] is None
    finally:
        await client.close()
        plane.store.close()


def test_worker_context_fills_only_a_missing_identity() -> None:
    text = '{"room":{"name":"r"},"outputs":["hls:a"]}'
    assert r.worker_context("audio-mixer-v1", text) == text
    assert json.loads(r.worker_context("audio-mixer-v2", text))["identity"] == "audio-mixer-v2"
    named = '{"room":{"name":"r"},"outputs":["hls:a"],"identity":"x"}'
    assert r.worker_context("audio-mixer-v2", named) == named
    assert r.room_source_sid(ROOM_SID) == ROOM_SID
    assert r.room_source_sid("RM-short") is None


async def test_source_sid_of_a_room_named_by_its_unique_name(tmp_path: Path) -> None:
    """The worker is in the room: the API asks the room server (real, in-process, its Video
    REST) for the room's SID and sets it on the processor's recordings."""
    from aiohttp.test_utils import TestClient, TestServer

    from mixer_ext.api.client import basic_authorization
    from mixer_ext.api.config import ApiSettings
    from mixer_ext.api.plane import ControlPlane
    from mixer_ext.api.routes import build_app
    from tests.support.twilio_util import ACCOUNT_SID, AUTH_TOKEN, twilio_room

    async with twilio_room() as room:
        auth = {"Authorization": basic_authorization(ACCOUNT_SID, AUTH_TOKEN)}
        client = TestClient(TestServer(build_app(room_plane := ControlPlane(
            ApiSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, api_data_dir=tmp_path),
            "127.0.0.1",
            0,
            RecordingLauncher(tmp_path),
            room_rest=r.room_rest_base("embedded", room.ws_server),
        ))))  # fmt: skip
        await client.start_server()
        try:
            import aiohttp

            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    f"{room.rest_url}/v1/Rooms", data={"UniqueName": "town-hall"}, headers=auth
                )
                rm = (await resp.json())["sid"]
            ctx = json.dumps({"room": {"name": "town-hall"}, "outputs": ["file:show.m4a"]})
            resp = await client.post(
                "/v1/MediaProcessors",
                data={"Extension": "audio-mixer-v1", "ExtensionContext": ctx},
                headers=auth,
            )
            zx = (await resp.json())["sid"]
            resp = await client.post(
                f"/internal/workers/{zx}/status",
                params={"key": room_plane.worker_key(zx)},
                json={"state": "started"},
            )
            assert resp.status == 204
            await asyncio.gather(*room_plane._lookups)
            page = await (
                await client.get("/v1/MediaRecordings", params={"SourceSid": rm}, headers=auth)
            ).json()
            assert [x["processor_sid"] for x in page["media_recordings"]] == [zx]
        finally:
            await client.close()
            room_plane.store.close()
    assert r.room_rest_base("embedded", "wss://rooms.example.com/x") == "https://rooms.example.com"
    assert r.room_rest_base("janus", "ws://127.0.0.1:8188") is None
