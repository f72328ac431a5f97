"""The private aiortc internals mixer-ext relies on are still there (issue 16.12).

The Janus connector points every SSRC of a renegotiated offer at its m-line's
receiver through ``RTCDtlsTransport._rtp_router.ssrc_table`` (stock aiortc
routes an SSRC only once, so a recycled m-line would otherwise be mixed as
silence).  The connector only logs a warning when the attribute is missing;
this test makes such an aiortc upgrade fail loudly instead.  It also covers
``RTCRtpReceiver._handle_rtp_packet``, the per-packet entry point after SRTP,
and the mixer's RTP tap (``mixer_ext.connectors.rtptap``, issue 13.1), which
replaces the receiver's private jitter buffer: over real WebRTC on loopback, the
tap must get every payload while aiortc's receiver statistics still count them
and nothing reaches aiortc's decoder.

aiortc is pinned to the minor version measured here (pyproject.toml); a bump
must come with a rerun of this file and of tests/connectors/test_janus.py.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer_ext.connectors import rtptap
from mixer_ext.roomserver import icerestart
from mixer_ext.sim.preencoded import PreEncodedOpusTrack, encode_tone

MEASURED_MINOR = "1.16"


def test_aiortc_is_the_measured_minor_version() -> None:
    assert aiortc.__version__.rsplit(".", 1)[0] == MEASURED_MINOR, (
        f"aiortc {aiortc.__version__} is not the measured {MEASURED_MINOR}.x: "
        "recheck the private attributes below and the Janus recycled m-line test"
    )


def test_dtls_transport_has_an_ssrc_routing_table() -> None:
    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            transceiver = pc.addTransceiver("audio", direction="recvonly")
            transport = transceiver.receiver.transport
            router = getattr(transport, "_rtp_router", None)
            assert router is not None, "RTCDtlsTransport._rtp_router is gone"
            table = getattr(router, "ssrc_table", None)
            assert isinstance(table, dict), "RtpRouter.ssrc_table is no longer a dict"
            # The connector writes receivers into it; routing must read them back.
            table[1234] = transceiver.receiver
            assert router.ssrc_table.get(1234) is transceiver.receiver
        finally:
            await pc.close()

    asyncio.run(main())


def test_receiver_packet_entry_point_keeps_its_signature() -> None:
    handler = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)
    assert handler is not None, "RTCRtpReceiver._handle_rtp_packet is gone"
    assert inspect.iscoroutinefunction(handler)
    params = list(inspect.signature(handler).parameters)
    assert params == ["self", "packet", "arrival_time_ms"], params


def test_receiver_has_the_jitter_buffer_and_codec_table_the_tap_replaces_and_reads() -> None:
    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            receiver = pc.addTransceiver("audio", direction="recvonly").receiver
            jitter = getattr(receiver, rtptap.JITTER_BUFFER_ATTR, None)
            assert jitter is not None and callable(jitter.add), "the receiver's jitter buffer"
            assert isinstance(getattr(receiver, rtptap.CODECS_ATTR, None), dict), "codec table"
        finally:
            await pc.close()

    asyncio.run(main())
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    stats_at = source.find("self.__remote_streams[packet.ssrc].add(packet)")
    tap_at = source.find("self.__jitter_buffer.add(packet)")
    assert 0 <= stats_at < tap_at, "receiver stats must be fed before the jitter buffer is"
    assert "packet._data = depayload(codec, packet.payload)" in source[:tap_at]


def test_the_tap_gets_every_payload_stats_still_count_and_the_decoder_gets_none() -> None:
    async def main() -> None:
        sender, receiver_pc = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in "ab")
        got: list[tuple[str, int, int, bytes]] = []
        try:
            sender.addTransceiver(PreEncodedOpusTrack(encode_tone(440.0)), direction="sendonly")
            await sender.setLocalDescription(await sender.createOffer())
            await receiver_pc.setRemoteDescription(sender.localDescription)
            (transceiver,) = receiver_pc.getTransceivers()
            feed = rtptap.tap_feed(transceiver.receiver)

            def sink(codec: Any, seq: int, ts: int, payload: bytes) -> None:
                got.append((codec.name, seq, ts, payload))

            feed.connect(sink)
            await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
            await sender.setRemoteDescription(receiver_pc.localDescription)
            await asyncio.sleep(1.5)
            track: MediaStreamTrack = transceiver.receiver.track
            assert len(got) >= 40, f"the tap got {len(got)} payloads in 1.5 s"
            assert {name.lower() for name, *_ in got} == {"opus"}
            seqs = [seq for _, seq, _, _ in got]
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
            assert all(len(payload) > 10 for *_, payload in got)
            sent = set(encode_tone(440.0).payloads)
            assert all(payload in sent for *_, payload in got), "a payload was cut wrong"
            stats = await transceiver.receiver.getStats()
            inbound = [s for s in stats.values() if s.type == "inbound-rtp"]
            assert inbound and inbound[0].packetsReceived >= len(got) - 2, inbound
            assert track._queue.empty(), "aiortc's decoder produced frames despite the tap"
            # the fast lane took all but the first packet, and kept aiortc's books
            lane = rtptap.install_fast_lane(transceiver.receiver.transport)
            assert lane.fast_packets >= len(got) - 2 and lane.dropped_packets == 0
            transport = next(s for s in stats.values() if s.type == "transport")
            assert transport.packetsReceived >= len(got), transport
            sources = transceiver.receiver.getSynchronizationSources()
            assert len(sources) == 1, sources
        finally:
            await sender.close()
            await receiver_pc.close()

    asyncio.run(main())


@st.composite
def _rtp_like(draw: st.DrawFn) -> bytes:
    """RTP packets near the edges: CSRCs, an extension, padding, each maybe truncated or wrong."""
    cc = draw(st.integers(0, 3))
    ext_words = draw(st.none() | st.integers(0, 3))
    first = 0x80 | cc | (0x10 if ext_words is not None else 0)
    body = bytes(11) + bytes(4 * cc)
    if ext_words is not None:
        body += b"\xbe\xde" + ext_words.to_bytes(2, "big") + bytes(4 * ext_words)
    body += draw(st.binary(max_size=8))
    padding = draw(st.none() | st.integers(0, 12))
    if padding is not None:
        first |= 0x20
        body += bytes(max(padding - 1, 0)) + bytes([padding])
    data = bytes([first]) + body
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=80) | _rtp_like())
def test_the_fast_lanes_header_parse_agrees_with_aiortcs(data: bytes) -> None:
    """``payload_bounds`` refuses what ``RtpPacket.parse`` refuses and finds the same payload."""
    try:
        expected: bytes | None = RtpPacket.parse(data).payload
    except ValueError:
        expected = None
    bounds = rtptap.payload_bounds(data)
    got = None if bounds is None else data[bounds[0] : bounds[1]]
    assert got == expected


def test_the_ice_connection_has_what_an_ice_restart_rekeys() -> None:
    """``mixer_ext.roomserver.icerestart`` (issue 21.4) writes these aioice/aiortc internals."""

    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            ice = pc.addTransceiver("audio", direction="recvonly").receiver.transport.transport
            conn = ice._connection
            for name in (
                "_local_username",
                "_local_password",
                "_check_list",
                "_check_list_done",
                "_check_list_state",
                "_remote_candidates",
                "_remote_candidates_end",
                "_nominated",
                "_query_consent_task",
            ):
                assert hasattr(conn, name), f"aioice Connection.{name} is gone"
            assert hasattr(ice.iceGatherer, "_remote_candidates_end")
            assert inspect.iscoroutinefunction(conn.query_consent)
            # the answer's credentials are read from the connection's own attributes
            assert "self._local_username" in inspect.getsource(type(conn).local_username.fget)
            assert "self._local_password" in inspect.getsource(type(conn).local_password.fget)
        finally:
            await pc.close()

    asyncio.run(main())


@pytest.mark.slow
def test_an_ice_restart_rekeys_in_place_and_the_media_goes_on() -> None:
    """A restart offer (new remote credentials) on a connected pair: the answer carries new
    local credentials, the connection keeps its nominated pair, DTLS stays up, the packets
    keep coming (the browser test moves them to a new path:
    tests/browser/test_twilio_reconnect.py)."""

    async def main() -> None:
        browser, server = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in "ab")
        try:
            browser.addTransceiver(PreEncodedOpusTrack(encode_tone(440.0)), direction="sendonly")
            await browser.setLocalDescription(await browser.createOffer())
            await server.setRemoteDescription(browser.localDescription)
            await server.setLocalDescription(await server.createAnswer())
            await browser.setRemoteDescription(server.localDescription)
            (transceiver,) = server.getTransceivers()
            await asyncio.sleep(1.0)
            assert server.connectionState == "connected"
            conn = transceiver.receiver.transport.transport._connection
            old_local = (conn.local_username, conn.local_password)
            pair = conn._nominated[1]
            offer = browser.localDescription.sdp
            ufrag, pwd = icerestart.ice_credentials(offer) or ("", "")
            restarted = offer.replace(ufrag, "zzzz").replace(pwd, "p" * 22)
            assert icerestart.is_ice_restart(server, restarted)
            assert not icerestart.is_ice_restart(server, offer)
            await icerestart.restart_ice(server, restarted)
            await server.setRemoteDescription(RTCSessionDescription(restarted, "offer"))
            await server.setLocalDescription(await server.createAnswer())
            answer = icerestart.ice_credentials(server.localDescription.sdp)
            assert answer == (conn.local_username, conn.local_password) != old_local
            assert (conn.remote_username, conn.remote_password) == ("zzzz", "p" * 22)
            assert conn._nominated[1] is pair  # the media keeps its path meanwhile
            before = await transceiver.receiver.getStats()
            got = [s.packetsReceived for s in before.values() if s.type == "inbound-rtp"]
            await asyncio.sleep(1.0)
            after = await transceiver.receiver.getStats()
            now = [s.packetsReceived for s in after.values() if s.type == "inbound-rtp"]
            assert now[0] >= got[0] + 30, (got, now)
            assert server.connectionState == "connected"
        finally:
            await browser.close()
            await server.close()

    asyncio.run(main())


def test_the_audio_level_hook_reads_rfc6464_levels_aiortc_parsed_and_hands_packets_on() -> None:
    """``forward.tap_audio_levels`` (the dominant speaker, issue 22.2) shadows the receiver's
    ``_handle_rtp_packet`` and reads ``packet.extensions.audio_level``, which aiortc's
    header-extension map parses from ``urn:ietf:params:rtp-hdrext:ssrc-audio-level``."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    from mixer_ext.roomserver.forward import tap_audio_levels

    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(
                    id=5, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                )
            ]
        )
    )
    sent = RtpPacket(payload_type=111, sequence_number=7, timestamp=960, ssrc=1234)
    sent.extensions.audio_level = (True, 23)
    sent.payload = b"\x01\x02"
    packet = RtpPacket.parse(sent.serialize(extensions), extensions)
    assert packet.extensions.audio_level == (True, 23)

    class Receiver:
        def __init__(self) -> None:
            self.handled: list[int] = []

        async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
            self.handled.append(packet.sequence_number)

    receiver = Receiver()
    levels: list[int] = []
    tap_audio_levels(receiver, levels.append)  # type: ignore[arg-type]
    tap_audio_levels(receiver, levels.append)  # again (a reused m-line): not wrapped twice
    asyncio.run(receiver._handle_rtp_packet(packet, arrival_time_ms=0))
    assert levels == [23] and receiver.handled == [7]


def test_the_ice_connection_has_what_rfc7675_consent_replaces() -> None:
    """``mixer_ext.roomserver.consent`` replaces aioice's consent task using these."""
    from aioice import ice

    from mixer_ext.roomserver import consent

    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio", direction="recvonly")
            (conn,) = consent.ice_connections(pc)
            for name in ("_nominated", "_query_consent_task", "remote_password", "_protocols"):
                assert hasattr(conn, name), f"aioice Connection.{name} is gone"
            params = list(inspect.signature(conn.build_request).parameters)
            assert params == ["pair", "nominate"], params
            params = list(inspect.signature(ice.StunProtocol.request).parameters)
            assert params[:5] == ["self", "request", "addr", "integrity_key", "retransmissions"]
            # what consent.py corrects: one try, no retransmission, 0.5 s for the answer
            source = inspect.getsource(type(conn).query_consent)
            assert "retransmissions=0" in source and "CONSENT_FAILURES" in source
            assert "return await self.close()" in source
        finally:
            await pc.close()

    asyncio.run(main())
