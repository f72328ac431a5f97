"""Janus scenario helpers shared by the connector test and the worker-level test.

- ``interface_address()``: the machine's own IPv4 address.  Janus gathers no
  loopback ICE candidates, so media between aiortc/Chromium and Janus goes
  over this address (it never leaves the machine).
- ``JanusServer`` / ``start_janus()``: Debian's janus started from a config
  written into a temporary directory: only the VideoRoom plugin and the
  WebSocket transport are loadable (the plugin and transport folders hold
  just those two libraries), the websocket bound to the interface address on
  a free port, no STUN, a small RTP port range.
- ``JanusPublisher`` lives in ``mixer_ext.sim.janus_publisher`` (the bench
  uses it too); ``moderate()`` here mutes a feed as a room admin would.
- ``ChromiumPublisher``: a headless Chromium publishing a fake-mic tone with
  plain WebSocket+JSON (no janus.js: Debian does not ship it), driven by
  ``tests/browser/pages/janus_publisher.mjs``.
- the FFT check a listener would make is ``mixer_ext.testing.spectrum.has_tone``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from mixer_ext.sim.janus_publisher import JanusPublisher
from mixer_ext.testing import janus as _janus
from mixer_ext.testing.janus import (
    JANUS_LIB_DIR,
    ROOM_SECRET,
    JanusServer,
    interface_address,
    room_config,
    stop_janus,
)
from tests.support.browser import PAGES, page_script
from tests.support.env import ROOT, free_port, require_path, require_program
from tests.support.marks import need

__all__ = ["ROOM_SECRET", "JanusServer", "interface_address", "room_config", "stop_janus"]


def start_janus(workdir: Path, **kwargs: Any) -> JanusServer:
    """``mixer_ext.testing.janus.start_janus``; skip locally / fail in CI when Janus is missing."""
    need("janus", "Janus")
    require_program("janus")
    require_path(JANUS_LIB_DIR / "plugins/libjanus_videoroom.so", "janus VideoRoom plugin missing")
    return _janus.start_janus(workdir, **kwargs)


@contextlib.contextmanager
def janus_server(workdir: Path, **kwargs: Any) -> Iterator[JanusServer]:
    server = start_janus(workdir, **kwargs)
    try:
        yield server
    finally:
        stop_janus(server)


# --- admin requests ------------------------------------------------------------


async def videoroom_request(
    server: JanusServer, body: dict[str, Any], *, within: float = 10.0
) -> dict[str, Any]:
    """One synchronous VideoRoom request on a throw-away session; returns plugindata.data."""
    async with websockets.connect(
        server.url, subprotocols=[websockets.Subprotocol("janus-protocol")]
    ) as ws:

        async def call(msg: dict[str, Any]) -> dict[str, Any]:
            tx = f"t{random.getrandbits(48):x}"
            msg = {**msg, "transaction": tx}
            if server.api_secret:
                msg["apisecret"] = server.api_secret
            await ws.send(json.dumps(msg))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), within))
                if reply.get("transaction") == tx and reply.get("janus") != "ack":
                    return dict(reply)

        created = await call({"janus": "create"})
        session = created["data"]["id"]
        attached = await call(
            {"janus": "attach", "session_id": session, "plugin": "janus.plugin.videoroom"}
        )
        handle = attached["data"]["id"]
        reply = await call(
            {"janus": "message", "session_id": session, "handle_id": handle, "body": body}
        )
        await call({"janus": "destroy", "session_id": session})
        return dict(reply["plugindata"]["data"])


async def moderate(
    server: JanusServer, room: int | str, feed: int | str, mid: str, *, mute: bool
) -> dict[str, Any]:
    """Mute/unmute one stream of a publisher, as a room admin (needs the room secret)."""
    return await videoroom_request(
        server,
        {
            "request": "moderate",
            "room": room,
            "secret": ROOM_SECRET,
            "id": feed,
            "mid": mid,
            "mute": mute,
        },
    )


@contextlib.asynccontextmanager
async def aiortc_publisher(
    server: JanusServer, room: int | str, display: str, freq: float
) -> AsyncIterator[JanusPublisher]:
    """An aiortc participant publishing a ``freq`` Hz tone; leaves on exit."""
    pub = JanusPublisher(server.url, room, display, freq, api_secret=server.api_secret)
    try:
        await pub.join()
        await pub.publish()
        yield pub
    finally:
        await pub.leave()


# --- the room story --------------------------------------------------------------

#: who takes part in the scenario, and the tone each one sends (Hz)
TONES: dict[str, float] = {"alice": 440.0, "bob": 660.0, "carol": 880.0, "dave": 1320.0}


class JanusRoomScenario:
    """The issue's room story in steps, so each test checks what it needs in between.

    ``start()``: alice and bob (aiortc) and dave (headless Chromium) join and
    publish.  ``alice_unpublishes()`` then ``alice_leaves()``: her m-line goes
    inactive.  ``carol_joins()``: carol publishes, and Janus recycles alice's
    m-line for her.  ``mute_bob()`` / ``unmute_bob()``: moderation.
    ``dave_leaves()``: the browser closes.  ``close()``: everyone still there
    leaves.  A connector-level test listens to tracks; a worker-level test
    checks the HLS output (``TONES`` says which tone belongs to whom).
    """

    def __init__(self, server: JanusServer, room: int | str, workdir: Path) -> None:
        self.server = server
        self.room = room
        self.workdir = workdir
        self.publishers: dict[str, JanusPublisher] = {}
        self.dave: ChromiumPublisher | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        for who in ("alice", "bob"):
            self.publishers[who] = await self._stack.enter_async_context(
                aiortc_publisher(self.server, self.room, who, TONES[who])
            )
        wav = write_tone_wav(self.workdir / "dave.wav", TONES["dave"])
        self.dave = await self._stack.enter_async_context(
            chromium_publisher(self.server, self.room, "dave", wav)
        )

    async def alice_unpublishes(self) -> None:
        await self.publishers["alice"].unpublish()

    async def alice_leaves(self) -> None:
        await self.publishers.pop("alice").leave()

    async def carol_joins(self) -> None:
        self.publishers["carol"] = await self._stack.enter_async_context(
            aiortc_publisher(self.server, self.room, "carol", TONES["carol"])
        )

    async def mute_bob(self, mute: bool = True) -> None:
        bob = self.publishers["bob"]
        assert bob.feed_id is not None and bob.audio_mid is not None
        await moderate(self.server, self.room, bob.feed_id, bob.audio_mid, mute=mute)

    async def unmute_bob(self) -> None:
        await self.mute_bob(False)

    async def dave_leaves(self) -> None:
        if self.dave is not None:
            await self.dave.stop()

    async def close(self) -> None:
        await self._stack.aclose()


# --- audio checks ------------------------------------------------------------------


# --- Chromium publisher -------------------------------------------------------------


def write_tone_wav(path: Path, freq: float, seconds: float = 10.0, rate: int = 48000) -> Path:
    """A mono 16-bit WAV tone for Chromium's fake microphone (it loops the file)."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


CHROMIUM = "/usr/bin/chromium"


class ChromiumPublisher:
    """Headless Chromium that joins ``room`` as ``display`` and publishes a fake-mic tone.

    The page (``tests/browser/pages/janus_publisher.html``) is served by an aiohttp
    server on 127.0.0.1 and speaks plain WebSocket+JSON to Janus.  The node
    driver prints ``PUBLISHED <feed id>`` once Janus has accepted the offer
    and keeps the page open until its stdin closes.
    """

    def __init__(self, server: JanusServer, room: int | str, display: str, wav: Path) -> None:
        self.server = server
        self.room = room
        self.display = display
        self.wav = wav
        self.feed_id: int | str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._site: Any = None
        self._runner: Any = None
        self.output: list[str] = []

    async def start(self, within: float = 45.0) -> int | str:
        from aiohttp import web

        app = web.Application()
        app.router.add_static("/", PAGES)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        self._site = web.TCPSite(self._runner, "127.0.0.1", port)
        await self._site.start()
        page = (
            f"http://127.0.0.1:{port}/janus_publisher.html?janus={self.server.url}"
            f"&room={self.room}&display={self.display}"
        )
        if self.server.api_secret:
            page += f"&apisecret={self.server.api_secret}"
        self._proc = await asyncio.create_subprocess_exec(
            *page_script("janus_publisher.mjs"),
            page,
            str(self.wav),
            CHROMIUM,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(ROOT),
            env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line_b = await asyncio.wait_for(
                    self._proc.stdout.readline(), deadline - time.monotonic()
                )
            except TimeoutError:
                break
            if not line_b:
                break
            line = line_b.decode(errors="replace").strip()
            self.output.append(line)
            if line.startswith("PUBLISHED "):
                word = line.split()[1]
                self.feed_id = int(word) if word.isdigit() else word
                return self.feed_id
            if line.startswith("FAILED"):
                break
        raise RuntimeError("chromium publisher did not publish:\n" + "\n".join(self.output))

    async def stop(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 15)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
            self._proc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def chromium_publisher(
    server: JanusServer, room: int | str, display: str, wav: Path
) -> AsyncIterator[ChromiumPublisher]:
    pub = ChromiumPublisher(server, room, display, wav)
    try:
        await pub.start()
        yield pub
    finally:
        await pub.stop()


def have_chromium() -> bool:
    return shutil.which("node") is not None and Path(CHROMIUM).exists()
