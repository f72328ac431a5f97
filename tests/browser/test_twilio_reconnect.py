"""twilio-video.js sessions survive a network drop (issue 21.4).

Media: a browser whose media path is cut (its address unreachable from the room server,
as when a phone changes networks) goes ``reconnecting`` (53405), restarts ICE from new
candidates and ends ``reconnected``, its audio heard again; the others never see it leave.

Signaling: its WebSocket goes through a TCP proxy the test severs for 5 s: the SDK goes
``reconnecting`` (53001), comes back with ``sync`` on a new socket and ends ``reconnected``;
the others see ``participantReconnecting`` / ``participantReconnected`` and no leave, the
Video REST says ``reconnecting`` meanwhile.  Cut for longer than the window, it leaves
cleanly: the others see it go, REST says ``disconnected``, its late ``sync`` gets 53001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mixer_ext.connectors.base import TrackSubscribed
from tests.support.room_util import client, next_event, record, spectrum_peak, until, write_tone_wav
from tests.support.twilio_util import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Browsers,
    TwilioRoom,
    browsers,
    twilio_room,
    twilio_token,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

TONE_HZ = 620.0


async def _hears(track: Any, seconds: float) -> float:
    samples = await record(track, seconds)
    peak, rms = spectrum_peak(samples[len(samples) // 4 :])
    return rms if abs(peak - TONE_HZ) < 8 else 0.0


@contextlib.contextmanager
def cut_media_path(room: TwilioRoom, room_name: str, identity: str) -> Iterator[set[Any]]:
    """The network cut, simulated at the room server's end (test-only, says so): every
    datagram from or to the addresses the browser has used so far (its candidates and the
    pairs checked) is dropped, STUN included, as if its network had gone away; addresses
    it gathers afterwards are unaffected, as on a phone's new network."""
    session = room.server.sessions[(room_name, identity)]
    ice = session.pc.getTransceivers()[0].receiver.transport.transport
    conn = ice._connection
    gone = {(c.host, c.port) for c in conn._remote_candidates}
    gone |= {p.remote_addr for p in conn._check_list} | {conn._nominated[1].remote_addr}
    patched = []
    for protocol in conn._protocols:
        received, send_data, send_stun = (
            protocol.datagram_received,
            protocol.send_data,
            protocol.send_stun,
        )

        def datagram_received(data: Any, addr: Any, _r: Any = received) -> None:
            if tuple(addr[:2]) not in gone:
                _r(data, addr)

        async def drop_data(data: bytes, addr: Any, _s: Any = send_data) -> None:
            if tuple(addr[:2]) not in gone:
                await _s(data, addr)

        def drop_stun(message: Any, addr: Any, _s: Any = send_stun) -> None:
            if tuple(addr[:2]) not in gone:
                _s(message, addr)

        protocol.datagram_received = datagram_received
        protocol.send_data = drop_data
        protocol.send_stun = drop_stun
        patched.append(protocol)
    try:
        yield gone
    finally:
        for protocol in patched:
            for name in ("datagram_received", "send_data", "send_stun"):
                vars(protocol).pop(name, None)


async def test_media_path_cut_ends_in_reconnected(tmp_path: Path, artifacts_dir: Path) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
    log = artifacts_dir / "twilio-ice-restart.log"
    async with twilio_room() as room, browsers(room, wav, log) as b:
        listener = client(room.server, "road", "listener")
        await listener.connect()
        events = listener.events()
        for pid, name in (("a", "alice"), ("b", "bob")):
            joined = await b.join(room, pid, twilio_token(name, "road"), "road")
            assert "error" not in joined, joined
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        sub = await next_event(events, TrackSubscribed, identity="alice", within=30)
        assert await _hears(sub.track, 2.0) > 0.02
        with cut_media_path(room, "road", "alice") as gone:
            reconnecting = await b.event("a", "reconnecting", within=20)
            assert reconnecting["error"]["code"] == 53405, reconnecting
            await b.event("a", "reconnected", within=30)
            session = room.server.sessions[("road", "alice")]
            ice = session.pc.getTransceivers()[0].receiver.transport.transport
            assert ice._connection._nominated[1].remote_addr not in gone
            # the tone again, through the same DTLS association, from the new path
            assert await _hears(sub.track, 2.5) > 0.02, "alice not heard after reconnecting"
        left = [e for e in b.events if e["event"] in ("disconnected", "participantDisconnected")]
        assert not left, left
        assert ("road", "alice") in room.server.sessions
        await listener.disconnect()


class SeverableProxy:
    """A TCP proxy between the browser and the room server's signaling that the test cuts:
    ``sever()`` ends every connection through it and refuses new ones (accepted, then closed
    at once, as a dead network does to the SDK's retries) until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.severed = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._client_side: set[asyncio.StreamWriter] = set()
        self._half_open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.severed:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        self._client_side.add(writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer), name="proxy-up"),
            asyncio.create_task(self._pump(up_reader, writer), name="proxy-down"),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            if w in self._half_open:
                continue  # the server's side stays open, silent: nothing tells it
            w.close()
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def sever(self, *, server_notices: bool = True) -> None:
        """Cut every connection; ``server_notices=False`` cuts only the browser's side, so
        the room server's socket stays open and silent (a half-open TCP connection, what a
        phone leaving a network leaves behind) until its own heartbeat timeout."""
        self.severed = True
        for writer in list(self._writers):
            if server_notices or writer in self._client_side:
                writer.transport.abort()  # no close handshake: the network went away
            else:
                self._half_open.add(writer)

    def restore(self) -> None:
        self.severed = False

    async def stop(self) -> None:
        self.sever()
        for writer in self._half_open:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def severable(room: TwilioRoom) -> AsyncIterator[SeverableProxy]:
    proxy = SeverableProxy(room.server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def _rest_status(room: TwilioRoom, room_sid: str, participant_sid: str) -> str:
    auth = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    url = f"{room.rest_url}/v1/Rooms/{room_sid}/Participants/{participant_sid}"
    async with aiohttp.ClientSession(headers=auth) as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["status"])


async def _join_through(b: Browsers, proxy: SeverableProxy, pid: str, name: str) -> Any:
    ws = f"ws://127.0.0.1:{proxy.port}/signaling"
    token = twilio_token(name, "road")
    return await b.command(pid, "join", token=token, room="road", wsServer=ws, options={})


async def test_signaling_cut_for_5_s_ends_in_reconnected(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
    log = artifacts_dir / "twilio-sync.log"
    async with twilio_room() as room, severable(room) as proxy, browsers(room, wav, log) as b:
        listener = client(room.server, "road", "listener")
        await listener.connect()
        events = listener.events()
        alice = await _join_through(b, proxy, "a", "alice")
        assert "error" not in alice, alice
        bob = await b.join(room, "b", twilio_token("bob", "road"), "road")
        assert "error" not in bob, bob
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        await b.event("a", "trackSubscribed", identity="bob", kind="audio", within=30)
        sub = await next_event(events, TrackSubscribed, identity="alice", within=30)
        assert await _hears(sub.track, 1.5) > 0.02

        proxy.sever()
        reconnecting = await b.event("a", "reconnecting", within=20)
        assert reconnecting["error"]["code"] == 53001, reconnecting
        await b.event("b", "participantReconnecting", identity="alice", within=10)
        assert await _rest_status(room, alice["sid"], alice["participant"]) == "reconnecting"
        await asyncio.sleep(5.0)
        proxy.restore()
        await b.event("a", "reconnected", within=20)
        await b.event("b", "participantReconnected", identity="alice", within=10)
        assert await _rest_status(room, alice["sid"], alice["participant"]) == "connected"

        assert await _hears(sub.track, 2.0) > 0.02, "alice not heard after reconnecting"
        # one alice, the same one: no duplicate, the same participant SID, bob still seen
        assert sorted(room.server.rooms["road"].participants) == ["alice", "bob", "listener"]
        assert room.server.rooms["road"].participants["alice"].sid == alice["participant"]
        seen = await b.command(
            "a",
            "eval",
            expr="async () => [...window.room.participants.values()].map(p => p.identity).sort()",
        )
        assert seen == ["bob", "listener"], seen
        left = [e for e in b.events if e["event"] in ("disconnected", "participantDisconnected")]
        assert not left, left
        # and the session goes on: a mute still reaches bob over the new socket
        await b.command("a", "disable")
        await b.event("b", "trackDisabled", identity="alice", within=10)
        await listener.disconnect()


async def test_signaling_cut_beyond_the_window_is_a_clean_departure(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 1.0, rate=48_000)
    log = artifacts_dir / "twilio-sync-lapsed.log"
    async with twilio_room() as room, severable(room) as proxy, browsers(room, wav, log) as b:
        room.server.rooms.reconnect_window = 3.0  # the SDK would retry for 30 s
        alice = await _join_through(b, proxy, "a", "alice")
        assert "error" not in alice, alice
        bob = await b.join(room, "b", twilio_token("bob", "road"), "road")
        assert "error" not in bob, bob
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        proxy.sever()
        await b.event("b", "participantReconnecting", identity="alice", within=20)
        await b.event("b", "participantDisconnected", identity="alice", within=15)
        assert await _rest_status(room, alice["sid"], alice["participant"]) == "disconnected"
        await until(lambda: "alice" not in room.server.rooms["road"].participants, 5)
        proxy.restore()
        gone = await b.event("a", "disconnected", within=30)
        assert gone["error"]["code"] == 53001, gone


async def test_a_new_network_cuts_signaling_and_media_at_once(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    """A phone changing networks: the socket and the media path go together; the SDK
    resumes the session with ``sync`` and restarts ICE, in whatever order it does them."""
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 2.0, rate=48_000)
    log = artifacts_dir / "twilio-new-network.log"
    async with twilio_room() as room, severable(room) as proxy, browsers(room, wav, log) as b:
        listener = client(room.server, "road", "listener")
        await listener.connect()
        events = listener.events()
        alice = await _join_through(b, proxy, "a", "alice")
        assert "error" not in alice, alice
        bob = await b.join(room, "b", twilio_token("bob", "road"), "road")
        assert "error" not in bob, bob
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        sub = await next_event(events, TrackSubscribed, identity="alice", within=30)
        assert await _hears(sub.track, 1.5) > 0.02
        with cut_media_path(room, "road", "alice") as gone:
            proxy.sever()
            await b.event("a", "reconnecting", within=20)
            await b.event("b", "participantReconnecting", identity="alice", within=10)
            await asyncio.sleep(5.0)
            proxy.restore()
            await b.event("a", "reconnected", within=30)
            await b.event("b", "participantReconnected", identity="alice", within=10)
            session = room.server.sessions[("road", "alice")]
            ice = session.pc.getTransceivers()[0].receiver.transport.transport
            await until(lambda: ice._connection._nominated[1].remote_addr not in gone, 20)
            assert await _hears(sub.track, 2.5) > 0.02, "alice not heard on the new network"
        left = [e for e in b.events if e["event"] in ("disconnected", "participantDisconnected")]
        assert not left, left
        assert sorted(room.server.rooms["road"].participants) == ["alice", "bob", "listener"]
        await listener.disconnect()


async def test_a_sync_before_the_server_noticed_the_drop_takes_over(
    tmp_path: Path, artifacts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The old socket is half-open at the server (no FIN, no RST reached it): the SDK's
    ``sync`` on a new socket supersedes it at once, without waiting for its heartbeats."""
    wav = tmp_path / "mic.wav"
    write_tone_wav(wav, TONE_HZ, 1.0, rate=48_000)
    log = artifacts_dir / "twilio-sync-half-open.log"
    async with twilio_room() as room, severable(room) as proxy, browsers(room, wav, log) as b:
        alice = await _join_through(b, proxy, "a", "alice")
        assert "error" not in alice, alice
        bob = await b.join(room, "b", twilio_token("bob", "road"), "road")
        assert "error" not in bob, bob
        await b.event("b", "trackSubscribed", identity="alice", kind="audio", within=30)
        caplog.set_level(logging.INFO, logger="mixer_ext.roomserver.twilio.session")
        proxy.sever(server_notices=False)
        await b.event("a", "reconnecting", within=20)
        proxy.restore()
        await b.event("a", "reconnected", within=20)
        # the server learnt of the drop only from the sync: reconnecting, then reconnected
        await b.event("b", "participantReconnected", identity="alice", within=10)
        assert "a sync supersedes the socket still open" in caplog.text
        assert sorted(room.server.rooms["road"].participants) == ["alice", "bob"]
        await b.command("a", "disable")
        await b.event("b", "trackDisabled", identity="alice", within=10)
        left = [e for e in b.events if e["event"] in ("disconnected", "participantDisconnected")]
        assert not left, left
