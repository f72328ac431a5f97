"""The embedded room server's CPU with N twilio-protocol speakers, everyone subscribed to everyone.

Method: the room server (with the twilio-video.js gateway) runs in its own process; this
process runs N aiortc speakers that speak twilio-video.js's wire protocol (TCMP hello carrying
the v2 ``connect``, the server's re-offers answered in ``update``), each sending a 440+ Hz tone
(aiortc Opus encoder) and receiving the N-1 others.  The speakers do not decode what they
receive (their receivers are tapped like the relay's, so the load generator stays light).
Then the same on the project's own protocol (``RoomClient``), in a fresh server process.
(Before the room server forwarded project publishers too, this second run measured the older
decode/re-encode relay: docs/topics/benchmarks.md quotes that run as the "before" figure.)  Once
every speaker receives N-1 streams, the server's CPU (utime+stime of its process, all threads,
from /proc) is sampled over ``--seconds``; the streams it forwards are N*(N-1).

    .venv/bin/python bench/twilio_room.py --speakers 10 --seconds 20   # [--quick]

When a path saturates (it delivers fewer packets than sent), its CPU figure is a
floor and the ratio flatters it: read the "packets delivered" line beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import connect as ws_connect

from mixer_ext.roomserver.forward import PacketFanout
from mixer_ext.sim.tracks import ToneTrack

ACCOUNT = "AC" + "0123456789abcdef" * 2
KEY = "SK" + "fedcba9876543210" * 2
SECRET = "bench-api-key-secret-0123456789abcdef"


async def serve(port: int) -> None:
    from aiohttp import web

    from mixer_ext.roomserver.server import RoomServer
    from mixer_ext.roomserver.twilio.gateway import TwilioGateway
    from mixer_ext.settings import Settings

    if os.environ.get("BENCH_SERVER_CONSENT") == "aioice":  # churn.py's "before"
        from mixer_ext.roomserver import consent

        consent.ice_connections = lambda pc: []  # keep_consent() finds nothing to replace
    server = RoomServer(Settings(room_secret="b" * 40), "127.0.0.1", 0, max_participants=500)
    await server.start()
    gateway = TwilioGateway(server, account_sid=ACCOUNT, api_keys={KEY: SECRET})
    app = web.Application()
    gateway.add_routes(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"ready {server.port}", flush=True)
    diag = os.environ.get("BENCH_MEDIA_LOG")
    kept: list[asyncio.Task[None]] = []  # runs until the process is terminated
    if diag:  # churn.py --diagnose: timestamped media states and loop lag of the server
        import mediadiag

        mediadiag.log_media(diag, "server")
        lag = mediadiag.LoopLag()
        lag.start()
        kept.append(asyncio.create_task(mediadiag.report_lag(lag), name="bench-lag-report"))
    await asyncio.Event().wait()


def token(identity: str, room: str) -> str:
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import VideoGrant

    t = AccessToken(ACCOUNT, KEY, SECRET, identity=identity, ttl=3600)
    t.add_grant(VideoGrant(room=room))
    return str(t.to_jwt())


class ProjectSpeaker:
    """The same load on the project's own protocol (``RoomClient``): the older relay path."""

    def __init__(self, url: str, room: str, identity: str, hz: float) -> None:
        from mixer_ext.connectors.embedded import RoomClient
        from mixer_ext.roomserver.tokens import mint_token

        tok = mint_token("b" * 40, room, identity)
        self.client = RoomClient(url, room, identity, tok, publish=ToneTrack(hz))
        self.identity = identity
        self.taps: list[PacketFanout] = []
        self._task: asyncio.Task[None] | None = None

    def receiving(self) -> int:
        return sum(1 for tap in self.taps if tap.frames > 0)

    async def start(self) -> None:
        from mixer_ext.connectors.base import TrackSubscribed

        await self.client.connect()

        async def tap_subscriptions() -> None:
            async for event in self.client.events():
                if isinstance(event, TrackSubscribed):
                    for t in self.client.pc.getTransceivers():
                        if t.receiver.track is event.track:
                            self.taps.append(PacketFanout(t.receiver, f"{self.identity}-in"))

        self._task = asyncio.create_task(tap_subscriptions(), name=f"bench-ev:{self.identity}")

    async def stop(self) -> None:
        await self.client.disconnect()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Speaker:
    """A twilio-video.js-protocol participant in Python (aiortc), for load only."""

    def __init__(
        self, url: str, room: str, identity: str, hz: float, *, subscribe: bool = True
    ) -> None:
        self.url, self.room, self.identity = url, room, identity
        #: False: ``automaticSubscription: false`` (publishes only)
        self.subscribe = subscribe
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = ToneTrack(hz)
        self.pc.addTransceiver(self.track, direction="sendrecv")
        self.taps: list[PacketFanout] = []
        self.pc.on("track", self._on_track)
        self.session: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _on_track(self, track: Any) -> None:
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                self.taps.append(PacketFanout(t.receiver, f"{self.identity}-in"))

    def receiving(self) -> int:
        return sum(1 for tap in self.taps if tap.frames > 0)

    async def start(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        connect = {
            "type": "connect",
            "version": 2,
            "name": self.room,
            "token": token(self.identity, self.room),
            "participant": {
                "revision": 1,
                "tracks": [
                    {"id": self.track.id, "kind": "audio", "name": "mic", "enabled": True,
                     "priority": "standard"}
                ],
            },
            "peer_connections": [
                {"id": "pc1", "description": {"type": "offer", "revision": 1,
                                              "sdp": self.pc.localDescription.sdp}}
            ],
            "subscribe": {"rules": [{"type": "include" if self.subscribe else "exclude",
                                     "all": True}], "revision": 1},
            "format": "unified",
            "ice_servers": "overrode",
        }  # fmt: skip
        self.ws = await ws_connect(self.url, max_size=None)
        hello = {"type": "hello", "version": 2, "id": self.identity, "timeout": 5000}
        await self.ws.send(json.dumps({**hello, "body": connect}))
        self._tasks = [
            asyncio.create_task(self._read(), name=f"bench-read:{self.identity}"),
            asyncio.create_task(self._beat(), name=f"bench-beat:{self.identity}"),
        ]

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(4.0)
            await self.ws.send('{"type":"heartbeat"}')

    async def _read(self) -> None:
        async for text in self.ws:
            msg = json.loads(text)
            if msg.get("type") != "msg":
                continue
            body = msg["body"]
            if body["type"] == "connected":
                self.session = body["session"]
            if body["type"] == "error":
                raise RuntimeError(f"{self.identity}: server error {body}")
            for pc in body.get("peer_connections", []):
                desc = pc.get("description") or {}
                if desc.get("type") == "answer":
                    await self.pc.setRemoteDescription(RTCSessionDescription(desc["sdp"], "answer"))
                elif desc.get("type") == "offer":
                    await self.pc.setRemoteDescription(RTCSessionDescription(desc["sdp"], "offer"))
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                    answer = {"type": "answer", "revision": desc["revision"],
                              "sdp": self.pc.localDescription.sdp}  # fmt: skip
                    pcs = [{"id": "pc1", "description": answer}]
                    update = {"type": "update", "version": 2, "session": self.session,
                              "peer_connections": pcs}  # fmt: skip
                    await self.ws.send(json.dumps({"type": "msg", "body": update}))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.ws.send('{"type":"bye"}')
            await self.ws.close()
        await self.pc.close()


async def run(n: int, seconds: float, protocol: str) -> float:
    port = benchlib.free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        str(port),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(benchlib.ROOT)},
    )
    speakers: list[Speaker | ProjectSpeaker] = []
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 30)
        assert line.startswith(b"ready"), line
        project_port = int(line.split()[1])
        for i in range(n):
            s: Speaker | ProjectSpeaker
            if protocol == "twilio":
                url = f"ws://127.0.0.1:{port}/signaling"
                s = Speaker(url, "bench", f"speaker-{i}", 300.0 + 40 * i)
            else:
                url = f"ws://127.0.0.1:{project_port}"
                s = ProjectSpeaker(url, "bench", f"speaker-{i}", 300.0 + 40 * i)
            await s.start()
            speakers.append(s)
        deadline = time.monotonic() + 60 + 5 * n
        while any(s.receiving() < n - 1 for s in speakers):
            if time.monotonic() > deadline:
                got = [s.receiving() for s in speakers]
                raise SystemExit(f"not everyone receives {n - 1} streams: {got}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # settle
        frames0 = sum(t.frames for s in speakers for t in s.taps)
        cpu0, t0 = benchlib.cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = benchlib.cpu_seconds(server.pid), time.monotonic()
        frames1 = sum(t.frames for s in speakers for t in s.taps)
        share = 100.0 * (cpu1 - cpu0) / (t1 - t0)
        streams = n * (n - 1)
        expected = streams * (t1 - t0) / 0.020
        path = (
            "twilio-video.js protocol" if protocol == "twilio" else "project protocol (RoomClient)"
        )
        print(f"--- {path}")
        print(f"speakers {n}, forwarded streams {streams} (everyone subscribed to everyone)")
        print(f"room server CPU: {share:.1f} % of one core over {t1 - t0:.0f} s")
        print(f"per forwarded stream: {share / streams:.2f} % of one core")
        delivered = (frames1 - frames0) / expected
        print(f"packets delivered to the speakers: {delivered:.1%} of 50/s/stream")
        print(f"load: {benchlib.load()}")
        return share
    finally:
        for s in speakers:
            await s.stop()
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 15)
        except TimeoutError:
            server.kill()
            await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="3 speakers, 3 s (smoke test)")
    parser.add_argument("--forwarding-only", action="store_true", help="skip the older path")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.speakers, args.seconds = 3, 3.0
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    print(benchlib.machine())
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    forwarded = asyncio.run(run(args.speakers, args.seconds, "twilio"))
    if not args.forwarding_only:
        transcoded = asyncio.run(run(args.speakers, args.seconds, "project"))
        print(f"ratio twilio/project: {forwarded / transcoded:.2f}x")


if __name__ == "__main__":
    main()
