"""twilio-video.js sessions survive a network drop (issue 21.4).

Media: a browser whose media path is cut (its address unreachable from the room server,
as when a phone changes networks) goes ``reconnecting`` (53405), restarts ICE from new
candidates and ends ``reconnected``, its audio heard again; the others never see it leave.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.connectors.base import TrackSubscribed
from tests.room_util import client, next_event, record, spectrum_peak, write_tone_wav
from tests.twilio_util import TwilioRoom, browsers, twilio_room, twilio_token

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
