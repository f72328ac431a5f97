"""The private aiortc internals mixer-ext relies on are still there (issue 16.12).

The Janus connector points every SSRC of a renegotiated offer at its m-line's
receiver through ``RTCDtlsTransport._rtp_router.ssrc_table`` (stock aiortc
routes an SSRC only once, so a recycled m-line would otherwise be mixed as
silence).  The connector only logs a warning when the attribute is missing;
this test makes such an aiortc upgrade fail loudly instead.  It also covers
``RTCRtpReceiver._handle_rtp_packet``, the per-packet entry point after SRTP
that the planned RTP tap (issue 13.1) hooks.

aiortc is pinned to the minor version measured here (pyproject.toml); a bump
must come with a rerun of this file and of tests/test_janus.py.
"""

from __future__ import annotations

import asyncio
import inspect

import aiortc
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver

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
