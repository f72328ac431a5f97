"""The room server's limits on the twilio-video.js gateway (issue 16.1, 16.4).

A real room server with the gateway on loopback, and a client that speaks the SDK's
wire protocol (TCMP v2) over a real WebSocket with a real aiortc offer: what the SDK
sends, sent fast.  twilio-video.js itself never floods, so the browser tests cannot
show this.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from mixer_ext.roomserver.server import RoomServer
from tests.support.room_util import settings
from tests.support.twilio_util import ACCOUNT_SID, API_KEY_SECRET, API_KEY_SID, twilio_token

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def gateway_server(**overrides: Any) -> AsyncIterator[RoomServer]:
    credentials = {
        "MIXER_ACCOUNT_SID": ACCOUNT_SID,
        "MIXER_API_KEYS": f"{API_KEY_SID}:{API_KEY_SECRET}",
    }
    with mock.patch.dict(os.environ, credentials):
        server = RoomServer(settings(**overrides), "127.0.0.1", 0)
    assert server.twilio is not None
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def hello(body: dict[str, Any] | None = None) -> str:
    msg: dict[str, Any] = {"id": "u-1", "timeout": 5000, "type": "hello", "version": 2}
    if body is not None:
        msg["body"] = body
    return json.dumps(msg)


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse, within: float) -> list[Any]:
    """The TCMP messages received until the server closes the socket."""
    got: list[Any] = []
    deadline = time.monotonic() + within
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            return got
        got.append(json.loads(msg.data))


async def test_errors_before_connect_close_the_socket() -> None:
    async with (
        gateway_server(room_max_errors_before_join=3) as server,
        aiohttp.ClientSession() as http,
    ):
        ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/signaling")
        await ws.send_str(hello())
        for _ in range(3):
            await ws.send_str(json.dumps({"type": "msg", "body": {"type": "nope"}}))
        got = await read_until_closed(ws, 5)
        kinds = [m["type"] for m in got]
        assert kinds[0] == "welcome" and kinds[-1] == "bye", kinds
        errors = [m["body"] for m in got if m["type"] == "msg"]
        assert [b["type"] for b in errors] == ["error"] * 3, errors
        assert all(b["code"] == 53004 for b in errors), errors


async def test_a_flooding_twilio_client_is_disconnected_with_53004() -> None:
    async with (
        gateway_server(room_message_burst=20, room_message_rate=5.0) as server,
        aiohttp.ClientSession() as http,
    ):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        connect = {
            "type": "connect",
            "version": 2,
            "name": "lobby",
            "token": twilio_token("mallory", "lobby"),
            "participant": {"revision": 1, "tracks": []},
            "peer_connections": [
                {
                    "id": "pc-1",
                    "description": {"type": "offer", "revision": 1, "sdp": pc.localDescription.sdp},
                }
            ],
            "subscribe": {"rules": [{"type": "include", "all": True}], "revision": 1},
            "format": "unified",
        }
        try:
            ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/signaling")
            await ws.send_str(hello(connect))
            while True:  # welcome, then connected
                msg = json.loads((await ws.receive(timeout=10)).data)
                if msg["type"] == "msg" and msg["body"].get("type") == "connected":
                    break
                assert msg["type"] in ("welcome", "heartbeat"), msg
            assert set(server.rooms["lobby"].participants) == {"mallory"}
            started = time.monotonic()
            for _ in range(200):  # heartbeats count too: every message spends a token
                await ws.send_str('{"type":"heartbeat"}')
            got = await read_until_closed(ws, 5)
            assert time.monotonic() - started < 2.0
            bodies = [m["body"] for m in got if m["type"] == "msg"]
            assert [b["code"] for b in bodies if b["type"] == "error"] == [53004], got[-3:]
            await asyncio.sleep(0.2)
            assert "mallory" not in getattr(server.rooms.get("lobby"), "participants", {})
        finally:
            await pc.close()
