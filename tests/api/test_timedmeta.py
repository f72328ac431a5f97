"""``POST /v1/PlayerStreamers/{Sid}/TimedMetadata`` and the worker's long poll, in-process.

The API is real (aiohttp on loopback); the launcher is ``RecordingLauncher``
(tests/api/test_routes.py: starts no worker), and the worker's side is the real
``AppMetadataPoller`` talking to the API over HTTP.  The stream itself is checked in
tests/core/test_app_metadata.py (outputs) and tests/e2e/test_api_reference_backend.py (a real
worker, read through a PlaybackGrant).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from mixer_ext.api import timedmeta as tm
from mixer_ext.core.payload import MAX_APP_METADATA_BYTES
from mixer_ext.worker.appmeta import AppMetadataPoller, metadata_url
from tests.support.api import AUTH, _client


async def _streaming(client: Any, plane: Any) -> tuple[str, str]:
    """A PlayerStreamer and a MediaProcessor whose worker says it streams."""
    vj = (await (await client.post("/v1/PlayerStreamers", headers=AUTH)).json())["sid"]
    ctx = json.dumps({"room": {"name": "r"}, "outputs": [vj]})
    resp = await client.post(
        "/v1/MediaProcessors",
        data={"Extension": "audio-mixer-v1", "ExtensionContext": ctx},
        headers=AUTH,
    )
    zx = (await resp.json())["sid"]
    return vj, zx


async def _report(client: Any, plane: Any, zx: str, state: str) -> None:
    resp = await client.post(
        f"/internal/workers/{zx}/status",
        params={"key": plane.worker_key(zx)},
        json={"state": state, "reason": "stopped"},
    )
    assert resp.status == 204


async def test_timed_metadata_only_while_a_processor_streams(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path)
    try:
        ghost = "VJ" + "e" * 32
        resp = await client.post(
            f"/v1/PlayerStreamers/{ghost}/TimedMetadata", data={"Metadata": "x"}, headers=AUTH
        )
        assert resp.status == 404 and (await resp.json())["code"] == 20404
        vj, zx = await _streaming(client, plane)
        links = (await (await client.get(f"/v1/PlayerStreamers/{vj}", headers=AUTH)).json())[
            "links"
        ]
        base = f"https://media.example.com/v1/PlayerStreamers/{vj}"
        assert links == {
            "access_token": base + "/AccessToken",
            "timed_metadata": base + "/TimedMetadata",
            "playback_grant": base + "/PlaybackGrant",
        }
        url = f"/v1/PlayerStreamers/{vj}/TimedMetadata"
        # launched, not streaming yet
        resp = await client.post(url, data={"Metadata": "early"}, headers=AUTH)
        body = await resp.json()
        assert resp.status == 409 and body["code"] == 20409, body
        assert body["message"].startswith(f"PlayerStreamer {vj} is created")
        await _report(client, plane, zx, "started")
        # refusals naming the problem
        resp = await client.post(url, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["message"] == "Metadata is required"
        big = "é" * (MAX_APP_METADATA_BYTES // 2 + 1)
        resp = await client.post(url, data={"Metadata": big}, headers=AUTH)
        err = await resp.json()
        assert resp.status == 400 and err["code"] == 21200
        assert "1026 bytes; at most 1024" in err["message"]
        assert (await client.post(url, data={"Metadata": "x"})).status == 401
        # accepted, in order, for the worker
        for text in ("poll:open", "é" * (MAX_APP_METADATA_BYTES // 2)):
            resp = await client.post(url, data={"Metadata": text}, headers=AUTH)
            body = await resp.json()
            assert resp.status == 201, body
            assert body["metadata"] == text and body["player_streamer_sid"] == vj
        poll = f"/internal/workers/{zx}/metadata"
        key = {"key": plane.worker_key(zx)}
        assert (await client.get(poll, params={"key": "forged"})).status == 403
        got = await (await client.get(poll, params={**key, "after": "0"})).json()
        assert [i["metadata"] for i in got["items"]] == ["poll:open", "é" * 512]
        assert [i["seq"] for i in got["items"]] == [1, 2]
        t0 = time.monotonic()
        queue = got["queue"]
        got = await (
            await client.get(poll, params={**key, "after": "2", "queue": queue, "wait": "0.3"})
        ).json()
        assert got == {"items": []} and time.monotonic() - t0 >= 0.25
        assert len(plane.app_metadata[zx]) == 0  # acknowledged
        # bounded: the app hears 429 rather than losing one silently
        for i in range(tm.MAX_PENDING):
            resp = await client.post(url, data={"Metadata": str(i)}, headers=AUTH)
            assert resp.status == 201
        resp = await client.post(url, data={"Metadata": "one more"}, headers=AUTH)
        assert resp.status == 429 and (await resp.json())["code"] == 20429
        # ended: the poll is told so, the app gets a clear error
        await client.post(f"/v1/MediaProcessors/{zx}", data={"Status": "ended"}, headers=AUTH)
        assert (await client.get(poll, params=key)).status == 410
        resp = await client.post(url, data={"Metadata": "late"}, headers=AUTH)
        assert resp.status == 409 and "is ended" in (await resp.json())["message"]
    finally:
        await client.close()
        plane.store.close()


async def test_the_workers_poller_gets_each_string_once_in_order(tmp_path: Path) -> None:
    client, plane = await _client(tmp_path)
    poller: AppMetadataPoller | None = None
    try:
        vj, zx = await _streaming(client, plane)
        await _report(client, plane, zx, "started")
        status_url = str(
            client.make_url(f"/internal/workers/{zx}/status?key={plane.worker_key(zx)}")
        )
        url = metadata_url(status_url)
        assert url is not None and url.endswith(f"/{zx}/metadata?key={plane.worker_key(zx)}")
        got: list[tuple[str, float]] = []
        all_in = asyncio.Event()

        def deliver(text: str) -> bool:
            got.append((text, time.monotonic()))
            if len(got) >= 5:
                all_in.set()
            return True

        poller = AppMetadataPoller(url, deliver)
        poller.start()
        await asyncio.sleep(0.3)  # the poll is waiting now
        sent: list[float] = []
        for i in range(5):
            sent.append(time.monotonic())
            resp = await client.post(
                f"/v1/PlayerStreamers/{vj}/TimedMetadata",
                data={"Metadata": f"cue {i}"},
                headers=AUTH,
            )
            assert resp.status == 201
            await asyncio.sleep(0.05)
        await asyncio.wait_for(all_in.wait(), 5)
        assert [t for t, _ in got] == [f"cue {i}" for i in range(5)]
        # a waiting poll answers when a string is posted, not when its wait (POLL_WAIT,
        # 20 s) runs out: each string reaches the worker within one POST's round trip
        # (milliseconds when idle; the bound tells "woken" from "timed out", whatever
        # the machine's load)
        assert max(at - s for (_, at), s in zip(got, sent, strict=True)) < 1.0
        # an API restart forgets its queues and numbers a new one from 1: the worker,
        # at "after 5" of the old queue, must not skip the new one's first strings
        plane.app_metadata.clear()
        all_in.clear()
        for text in ("after restart 1", "after restart 2"):
            resp = await client.post(
                f"/v1/PlayerStreamers/{vj}/TimedMetadata", data={"Metadata": text}, headers=AUTH
            )
            assert resp.status == 201
        while len(got) < 7:
            await asyncio.wait_for(all_in.wait(), 5)
            all_in.clear()
        assert [t for t, _ in got[5:]] == ["after restart 1", "after restart 2"]
        # ending the processor ends the poll (410), without a retry loop
        await client.post(f"/v1/MediaProcessors/{zx}", data={"Status": "ended"}, headers=AUTH)
        plane._finished(zx)
        task = poller._task
        assert task is not None
        await asyncio.wait_for(asyncio.shield(task), 5)
    finally:
        if poller is not None:
            await poller.aclose()
        await client.close()
        plane.store.close()


def test_metadata_url_only_beside_the_apis_status_url() -> None:
    zx = "ZX" + "a" * 32
    assert metadata_url(f"http://api:8080/internal/workers/{zx}/status?key=k") == (
        f"http://api:8080/internal/workers/{zx}/metadata?key=k"
    )
    assert metadata_url("https://hooks.example.com/status") is None
    assert metadata_url(None) is None
