"""The API's handlers in-process: errors, limits, recordings, and callback delivery.

A unit test of the code around the launcher: ``RecordingLauncher`` below stands in for
the worker processes (it starts nothing and records what it was asked), so the 429 cap,
the MediaRecordings lifecycle and the worker-report path are checked without launching
real workers; tests/e2e/test_api.py runs the real ones. Callback delivery goes to a real
HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from mixer_ext.api.callbacks import CallbackDispatcher
from mixer_ext.api.client import basic_authorization
from mixer_ext.api.plane import ControlPlane
from mixer_ext.api.store import Store
from tests.support.api import ACCOUNT, AUTH, KEY_SID, TOKEN, RecordingLauncher, _client, processor


async def test_errors_are_twilio_shaped(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path)
    try:
        resp = await client.get("/v1/PlayerStreamers")
        assert resp.status == 401 and (await resp.json())["code"] == 20003
        resp = await client.get(
            "/v1/PlayerStreamers",
            headers={"Authorization": basic_authorization(ACCOUNT, "no")},
        )
        assert resp.status == 401
        resp = await client.get(
            "/v1/PlayerStreamers",
            headers={"Authorization": basic_authorization(KEY_SID, "key-secret")},
        )
        assert resp.status == 200
        body = await (await client.get("/v1/PlayerStreamers/VJ" + "0" * 32, headers=AUTH)).json()
        assert body == {
            "code": 20404,
            "message": f"The requested resource /PlayerStreamers/VJ{'0' * 32} was not found",
            "more_info": "https://www.twilio.com/docs/errors/20404",
            "status": 404,
        }
        vj = (await (await client.post("/v1/PlayerStreamers", headers=AUTH)).json())["sid"]
        resp = await client.post(
            f"/v1/PlayerStreamers/{vj}/PlaybackGrant", data={"Ttl": "61"}, headers=AUTH
        )
        assert resp.status == 400 and "Ttl" in (await resp.json())["message"]
        resp = await client.get("/v1/PlayerStreamers", params={"PageSize": "1001"}, headers=AUTH)
        assert resp.status == 400
        page = await (await client.get("/v1/PlayerStreamers", headers=AUTH)).json()
        assert page["meta"]["url"].startswith("https://media.example.com/v1/PlayerStreamers?")
        # an ended streamer cannot be an output
        await client.post(f"/v1/PlayerStreamers/{vj}", data={"Status": "ended"}, headers=AUTH)
        ctx = json.dumps({"room": {"name": "r"}, "outputs": [vj]})
        resp = await client.post(
            "/v1/MediaProcessors",
            data={"Extension": "audio-mixer-v1", "ExtensionContext": ctx},
            headers=AUTH,
        )
        assert resp.status == 400 and "is ended" in (await resp.json())["message"]
        # one source per PlayerStreamer
        vj2 = (await (await client.post("/v1/PlayerStreamers", headers=AUTH)).json())["sid"]
        form = {
            "Extension": "audio-mixer-v1",
            "ExtensionContext": json.dumps({"room": {"name": "r"}, "outputs": [vj2]}),
        }
        assert (await client.post("/v1/MediaProcessors", data=form, headers=AUTH)).status == 201
        resp = await client.post("/v1/MediaProcessors", data=form, headers=AUTH)
        assert resp.status == 400 and "already has an active" in (await resp.json())["message"]
    finally:
        await client.close()
        plane.store.close()


async def test_processor_cap_and_recordings(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path, api_max_processors=1)
    launcher = plane.launcher
    assert isinstance(launcher, RecordingLauncher)
    try:
        ctx = json.dumps({"room": {"name": "r"}, "outputs": ["file:mix.m4a"]})
        form = {"Extension": "audio-mixer-v2", "ExtensionContext": ctx}
        resp = await client.post("/v1/MediaProcessors", data=form, headers=AUTH)
        assert resp.status == 201
        zx = (await resp.json())["sid"]
        resp = await client.post("/v1/MediaProcessors", data=form, headers=AUTH)
        assert resp.status == 429 and (await resp.json())["code"] == 20429
        assert launcher.started == [zx]

        recs = await (
            await client.get("/v1/MediaRecordings", params={"ProcessorSid": zx}, headers=AUTH)
        ).json()
        (rec,) = recs["media_recordings"]
        assert rec["status"] == "processing" and rec["processor_sid"] == zx
        resp = await client.delete(f"/v1/MediaRecordings/{rec['sid']}", headers=AUTH)
        assert resp.status == 409  # still being written

        # the worker reports through its keyed URL; a wrong key is refused
        resp = await client.post(f"/internal/workers/{zx}/status?key=bad", json={"state": "ended"})
        assert resp.status == 403
        (launcher.work / zx).mkdir()
        (launcher.work / zx / "mix.m4a").write_bytes(b"\0" * 1000)
        url = f"/internal/workers/{zx}/status?key={plane.worker_key(zx)}"
        assert (await client.post(url, json={"state": "started"})).status == 204
        launcher.running.clear()  # the worker exits after its report
        await client.post(url, json={"state": "ended", "reason": "max-participant-duration"})
        mp = await (await client.get(f"/v1/MediaProcessors/{zx}", headers=AUTH)).json()
        assert (mp["status"], mp["ended_reason"]) == ("ended", "max-participant-duration")

        rec = await (await client.get(f"/v1/MediaRecordings/{rec['sid']}", headers=AUTH)).json()
        assert rec["status"] == "completed" and rec["media_size"] == 1000
        media = await client.get(f"/v1/MediaRecordings/{rec['sid']}/Media", headers=AUTH)
        assert media.status == 200 and len(await media.read()) == 1000
        resp = await client.delete(f"/v1/MediaRecordings/{rec['sid']}", headers=AUTH)
        assert resp.status == 204
        assert not (launcher.work / zx / "mix.m4a").exists()
        # the slot is free again
        assert (await client.post("/v1/MediaProcessors", data=form, headers=AUTH)).status == 201
    finally:
        await client.close()
        plane.store.close()


async def test_callbacks_retry_in_order_and_sign_get(tmp_path: Path) -> None:
    got: list[tuple[str, str, dict[str, str], str]] = []
    fail_first = {"n": 1}

    async def hook(request: web.Request) -> web.Response:
        if fail_first["n"]:
            fail_first["n"] -= 1
            return web.Response(status=500)
        form = dict(await request.post()) if request.method == "POST" else {}
        got.append(
            (
                request.method,
                str(request.url),
                {k: str(v) for k, v in form.items()},
                request.headers["X-Twilio-Signature"],
            )
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/hook", hook)
    server = TestServer(app)
    await server.start_server()
    store = Store(tmp_path / "cb.db")
    post = processor(status_callback=str(server.make_url("/hook")))
    get = processor(status_callback=str(server.make_url("/hook?x=1")), status_callback_method="GET")
    for p in (post, get):
        store.insert_processor(p)
    store.save_processor(post, ["media-processor-started", "media-processor-ended"])
    store.save_processor(get, ["media-processor-started"])
    dispatcher = CallbackDispatcher(store, TOKEN)
    import mixer_ext.api.callbacks as cbmod

    cbmod.FIRST_RETRY = 0.1  # fast retries for the test
    task = asyncio.create_task(dispatcher.run())
    try:
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cbmod.FIRST_RETRY = 1.0
        await server.close()
        store.close()
    assert len(got) == 3, got
    validator = RequestValidator(TOKEN)
    for method, url, form, sig in got:
        assert validator.validate(url, form, sig), (method, url)
    posts = [f["StatusCallbackEvent"] for m, _, f, _ in got if m == "POST"]
    assert posts == ["media-processor-started", "media-processor-ended"]  # order kept over a retry
    (get_url,) = [u for m, u, _, _ in got if m == "GET"]
    assert "x=1" in get_url and "StatusCallbackEvent=media-processor-started" in get_url


async def test_a_worker_that_died_while_the_api_was_down_is_failed(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path)
    ctx = json.dumps({"room": {"name": "r"}, "outputs": ["hls:a"]})
    form = {"Extension": "audio-mixer-v1", "ExtensionContext": ctx}
    try:
        kept = (await (await client.post("/v1/MediaProcessors", data=form, headers=AUTH)).json())[
            "sid"
        ]
        died = (await (await client.post("/v1/MediaProcessors", data=form, headers=AUTH)).json())[
            "sid"
        ]
    finally:
        await client.close()
        plane.store.close()
    launcher = plane.launcher
    assert isinstance(launcher, RecordingLauncher)
    # the API restarts: one worker is still running, the other died meanwhile
    survivor = next(p for p in launcher.running if p == 10_001)
    settings = plane.cfg
    again = RecordingLauncher(tmp_path)
    again.running = {survivor}
    restarted = ControlPlane(settings, "127.0.0.1", 0, again)
    restarted._adopt()
    try:
        a = restarted.store.processor(kept)
        b = restarted.store.processor(died)
        assert a is not None and a.status.value == "started"
        assert b is not None and (b.status.value, b.ended_reason) == (
            "failed",
            "internal-service-error",
        )
        assert b.error_message and "not running" in b.error_message
    finally:
        restarted.store.close()


async def test_grant_origin_becomes_cors_origin(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path)
    try:
        vj = (await (await client.post("/v1/PlayerStreamers", headers=AUTH)).json())["sid"]
        resp = await client.post(
            f"/v1/PlayerStreamers/{vj}/PlaybackGrant",
            data={"AccessControlAllowOrigin": "https://listen.example.com"},
            headers=AUTH,
        )
        assert resp.status == 201
        url = (await resp.json())["grant"]["playbackUrl"]
        assert url.startswith(f"https://media.example.com/hls/{vj}/index.m3u8?token=")
        master = await client.get(url.removeprefix("https://media.example.com"))
        assert master.status == 200
        assert master.headers["Access-Control-Allow-Origin"] == "https://listen.example.com"
        text = await master.text()
        media_uri = next(ln for ln in text.splitlines() if ln and ln[0] != "#")
        media = await client.get(f"/hls/{vj}/{media_uri}")
        assert media.status == 404  # no stream written yet, but the session was accepted
        assert media.headers["Access-Control-Allow-Origin"] == "https://listen.example.com"
        # a grant without an origin: any origin
        resp = await client.post(f"/v1/PlayerStreamers/{vj}/PlaybackGrant", headers=AUTH)
        url = (await resp.json())["grant"]["playbackUrl"]
        master = await client.get(url.removeprefix("https://media.example.com"))
        assert master.headers["Access-Control-Allow-Origin"] == "*"
    finally:
        await client.close()
        plane.store.close()


async def test_own_client_takes_the_users_path(tmp_path: Path) -> None:
    from mixer_ext.api.client import MediaApiClient, MediaApiError

    client, plane = await _client(tmp_path)
    base = str(client.make_url("/")).rstrip("/")
    try:
        async with MediaApiClient(base, ACCOUNT, TOKEN) as api:
            vj = (await api.create_player_streamer())["sid"]
            zx = (
                await api.create_media_processor(
                    "audio-mixer-v1", {"room": {"name": "r"}, "outputs": [vj]}
                )
            )["sid"]
            grant = await api.create_playback_grant(vj)
            assert grant["grant"]["playerStreamerSid"] == vj
            assert (await api.end_media_processor(zx))["ended_reason"] == "ended-via-api"
            try:
                await api.create_media_processor("nope", {"room": {"name": "r"}, "outputs": [vj]})
            except MediaApiError as exc:
                assert exc.status == 400 and "nope" in str(exc)
            else:
                raise AssertionError("an unknown extension was accepted")
        async with MediaApiClient(base, ACCOUNT, "wrong") as api:
            try:
                await api.fetch_media_processor(zx)
            except MediaApiError as exc:
                assert exc.status == 401
            else:
                raise AssertionError("wrong credentials were accepted")
    finally:
        await client.close()
        plane.store.close()


def test_settings_refuse_to_run_open(monkeypatch: Any) -> None:
    import pytest

    from mixer_ext.api.config import load_api_settings
    from mixer_ext.errors import ConfigError

    for value in (None, "", "  "):
        if value is None:
            monkeypatch.delenv("MIXER_AUTH_TOKEN", raising=False)
        else:
            monkeypatch.setenv("MIXER_AUTH_TOKEN", value)
        with pytest.raises(ConfigError, match="MIXER_AUTH_TOKEN is required"):
            load_api_settings()
    monkeypatch.setenv("MIXER_AUTH_TOKEN", "t")
    monkeypatch.setenv("MIXER_API_KEYS", "SKnope:secret-value")
    with pytest.raises(ConfigError, match="MIXER_API_KEYS: pair 0") as exc:
        load_api_settings()
    assert "secret-value" not in str(exc.value)
    monkeypatch.setenv("MIXER_API_KEYS", "SK" + "5" * 32 + ":s")
    assert load_api_settings().keys() == {"SK" + "5" * 32: "s"}


def test_kubernetes_settings_name_what_is_missing(monkeypatch: Any) -> None:
    import pytest

    from mixer_ext.api.config import load_api_settings
    from mixer_ext.errors import ConfigError

    monkeypatch.setenv("MIXER_AUTH_TOKEN", "t")
    monkeypatch.setenv("MIXER_API_LAUNCHER", "kubernetes")
    with pytest.raises(ConfigError, match="MIXER_API_KUBE_IMAGE"):
        load_api_settings()
    monkeypatch.setenv("MIXER_API_KUBE_IMAGE", "mixer-ext:0.1.0")
    with pytest.raises(ConfigError, match="MIXER_API_INTERNAL_URL"):
        load_api_settings()
    monkeypatch.setenv("MIXER_API_INTERNAL_URL", "http://mixer-ext-api.live.svc:8080")
    assert load_api_settings().api_kube_namespace == "default"
    # the Jobs' pod fields the chart passes: JSON parsed, a security field refused by name
    monkeypatch.setenv("MIXER_API_KUBE_RESOURCES", '{"requests": {"memory": "300Mi"}}')
    monkeypatch.setenv("MIXER_API_KUBE_POD_SPEC", '{"nodeSelector": {"pool": "media"}}')
    cfg = load_api_settings()
    assert cfg.api_kube_resources == {"requests": {"memory": "300Mi"}}
    assert cfg.api_kube_pod_spec == {"nodeSelector": {"pool": "media"}}
    monkeypatch.setenv("MIXER_API_KUBE_POD_SPEC", '{"hostNetwork": true}')
    with pytest.raises(ConfigError, match=r"MIXER_API_KUBE_POD_SPEC.*hostNetwork not allowed"):
        load_api_settings()


async def test_healthz_answers_without_credentials(tmp_path: Path) -> None:
    """The chart's liveness and readiness probes: /healthz needs no credentials (kubelet
    sends none) while everything under /v1/ still does."""
    client, plane = await _client(tmp_path)
    try:
        resp = await client.get("/healthz")
        assert resp.status == 200 and await resp.text() == "ok\n"
        assert (await client.get("/v1/MediaProcessors")).status == 401
    finally:
        await client.close()
        await plane.stop()
