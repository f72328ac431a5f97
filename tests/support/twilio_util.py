"""twilio-video.js participants in headless Chromium, and tokens from the twilio library.

``twilio_room()`` runs the embedded room server with the twilio-video.js gateway mounted;
``Browsers`` drives ``tests/browser/pages/twilio_participants.mjs`` (one browser context per
participant id) and collects the SDK's events it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from aiohttp import web
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VideoGrant
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from mixer_ext.roomserver.server import RoomServer
from mixer_ext.roomserver.twilio.gateway import TwilioGateway
from tests.support.browser import page_script
from tests.support.env import ROOT, require_path
from tests.support.room_util import SECRET, settings

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
API_KEY_SID = "SK" + "fedcba9876543210" * 2
API_KEY_SECRET = "twilio-test-api-key-secret-0123456789"
AUTH_TOKEN = "twilio-test-auth-token-0123456789abcdef"
HARNESS = ROOT / "tests" / "browser" / "pages" / "twilio"
SDK_DIST = ROOT / "node_modules" / "twilio-video" / "dist"


def twilio_token(identity: str, room: str | None, ttl: int = 600, **kw: Any) -> str:
    """What an app backend does: the helper library's AccessToken with a VideoGrant."""
    token = AccessToken(ACCOUNT_SID, API_KEY_SID, API_KEY_SECRET, identity=identity, ttl=ttl, **kw)
    token.add_grant(VideoGrant(room=room))
    return token.to_jwt()


@dataclass
class TwilioRoom:
    server: RoomServer
    gateway: TwilioGateway
    #: the port serving the test pages (the harness and the SDK's dist/)
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws_server(self) -> str:
        """What an app passes as ``wsServer``: the room server's own port."""
        return f"ws://127.0.0.1:{self.server.port}/signaling"


@contextlib.asynccontextmanager
async def twilio_room(**overrides: Any) -> AsyncIterator[TwilioRoom]:
    """The room server as ``mixer-ext room-server`` runs it with the three Twilio settings."""
    credentials = {
        "MIXER_ACCOUNT_SID": ACCOUNT_SID,
        "MIXER_API_KEYS": f"{API_KEY_SID}:{API_KEY_SECRET}",
        "MIXER_AUTH_TOKEN": AUTH_TOKEN,
    }
    with mock.patch.dict(os.environ, credentials):
        server = RoomServer(settings(), "127.0.0.1", 0, **overrides)
    assert server.twilio is not None
    await server.start()
    pages = web.Application()
    pages.router.add_static("/twilio-harness/", HARNESS)
    pages.router.add_static("/twilio-sdk/", SDK_DIST)
    runner = web.AppRunner(pages, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield TwilioRoom(server, server.twilio, int(runner.addresses[0][1]))
    finally:
        await server.stop()
        await runner.cleanup()


class Browsers:
    """The node driver: ``await b.command(id, op, ...)``, ``await b.event(id, name, ...)``."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.events: list[dict[str, Any]] = []
        self._replies: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="twilio-browsers-out")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with self.log.open("a") as f:
                f.write(line.decode())
            item = json.loads(line)
            if "reply" in item:
                fut = self._replies.pop((item["id"], item["op"]), None)
                if fut is not None and not fut.done():
                    fut.set_result(item["reply"])
            else:
                self.events.append(item)
                self._changed.set()

    async def command(self, pid: str, op: str, within: float = 40.0, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[(pid, op)] = fut
        self.proc.stdin.write((json.dumps({"id": pid, "op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, within)

    async def join(self, room: TwilioRoom, pid: str, token: str, name: str, **options: Any) -> Any:
        return await self.command(
            pid, "join", token=token, room=name, wsServer=room.ws_server, options=options
        )

    async def event(
        self, pid: str, name: str, within: float = 20.0, **match: Any
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for item in self.events:
                wanted = item["id"] == pid and item["event"] == name
                if wanted and all(item.get(k) == v for k, v in match.items()):
                    return item
            left = deadline - time.monotonic()
            if left <= 0:
                got = [(i["id"], i["event"]) for i in self.events]
                raise AssertionError(f"{pid}: no {name} {match} within {within} s; saw {got}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


@contextlib.asynccontextmanager
async def browsers(room: TwilioRoom, wav: Path, log: Path) -> AsyncIterator[Browsers]:
    require_path(SDK_DIST / "twilio-video.min.js", "twilio-video missing: run make setup")
    with log.open("w"):
        pass
    stderr = log.with_suffix(".stderr.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *page_script("twilio_participants.mjs"),
        room.base_url,
        str(wav),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    b = Browsers(proc, log)
    try:
        yield b
        external = [e["url"] for e in b.events if e["event"] == "external"]
        assert not external, f"twilio-video.js tried to reach beyond loopback: {external}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        b._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await b._reader
        stderr.close()


def video_client(room: TwilioRoom, user: str = API_KEY_SID, password: str = API_KEY_SECRET) -> Any:
    c = Client(user, password, ACCOUNT_SID)
    c.video.base_url = room.rest_url
    return c.video.v1


async def callback_receiver() -> tuple[web.AppRunner, str, list[tuple[str, dict[str, str], bool]]]:
    """A webhook endpoint that checks each request's signature as Twilio's docs say to."""
    seen: list[tuple[str, dict[str, str], bool]] = []
    validator = RequestValidator(AUTH_TOKEN)

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        ok = validator.validate(str(request.url), form, request.headers["X-Twilio-Signature"])
        seen.append((form["StatusCallbackEvent"], form, ok))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", seen


def mixer_env(room: TwilioRoom, hls_dir: Path, metrics_port: int) -> dict[str, str]:
    """A worker's environment for ``room``: event HLS into ``hls_dir``, metrics on a port."""
    return {
        "MIXER_ROOM_SECRET": SECRET,
        "MIXER_ROOM_URL": room.server.url,
        "MIXER_HLS_DIR": str(hls_dir),
        "MIXER_HLS_PLAYLIST_TYPE": "event",
        "MIXER_METRICS_PORT": str(metrics_port),
    }
