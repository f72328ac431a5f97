"""The mixer's RTP tap: a subscribed track's payloads, straight from aiortc's receiver (issue 13.1).

Stock aiortc hands each received audio frame through its own jitter buffer (which
holds 4 frames back before releasing one), a ``queue.Queue`` to a per-track decoder
thread, and ``call_soon_threadsafe`` back to an ``asyncio.Queue`` that ``recv()``
reads: two thread hops and a reader task per 20 ms frame per participant.  The mixer
needs none of it: its ``Input`` has its own jitter buffer and decodes in the tick.

``tap_receiver`` replaces one object inside ``RTCRtpReceiver``: its private jitter
buffer (``_RTCRtpReceiver__jitter_buffer``).  ``_handle_rtp_packet`` calls
``jitter_buffer.add(packet)`` after everything else it does per packet (SRTP is
already off, the RTCP receiver statistics, the active SSRCs for
``getSynchronizationSources()``, RTX unwrapping, codec lookup and depayloading), so
``getStats()`` and the receiver reports sent to the peer keep working.  Our stand-in
hands ``(codec, sequence number, RTP timestamp, payload)`` to a sink on the event loop
and returns "no frame", so nothing reaches aiortc's decoder queue: the decoder thread
aiortc still starts stays blocked on an empty queue (it costs nothing) and ends, as
before, when the receiver stops.  The receiver's ``track`` then never yields a frame.

The fast lane (``FastLane``) goes one step further for a tapped receiver's packets.
Stock aiortc puts every datagram of a connection through aioice's ``asyncio.Queue``
to the DTLS transport's reader task, which unprotects it, parses the whole RTP
header with its extensions into an ``RtpPacket``, routes it and awaits two
coroutines of the receiver: about half of the mixer's per-packet CPU.  The lane
replaces the aioice ``Connection.data_received`` of the mixer's connection: an
SRTP (not SRTCP) datagram whose SSRC the transport's router already sends to a
tapped audio receiver is unprotected with the transport's own SRTP session and
handed to the tap right there, with the same bookkeeping the stock path does for
audio (the transport's byte and packet counters, the receiver's active SSRCs and
its RTCP statistics, so receiver reports and ``getStats()`` are unchanged).
Everything else (STUN, DTLS, SRTCP, the first packet of an SSRC, packets of a
receiver that is not tapped, video) takes the stock path, unchanged.  No task and
no queue: one synchronous call per datagram, in arrival order.

This module is the only place that knows those internals: checked for aiortc 1.16
(pinned in pyproject.toml) and the aioice it requires (0.12 and later, below 1.0);
``tests/test_aiortc_private_api.py`` fails if they change.

``EncodedFeed`` is the per-input end of it (the ``EncodedSource`` of
``mixer_ext.core.frames``): a connector gives one per subscribed track in
``TrackSubscribed.source``, the mixer clock connects its input's ``push_encoded``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import clock
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import is_rtcp

#: the attribute of RTCRtpReceiver (name-mangled ``__jitter_buffer``) that the tap replaces
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
#: payload type -> RTCRtpCodecParameters, as negotiated (read, never written)
CODECS_ATTR = "_RTCRtpReceiver__codecs"
#: what the fast lane reads or updates per packet, as the stock path does (name-mangled)
RECEIVER_STATS_ATTR = "_RTCRtpReceiver__remote_streams"  # ssrc -> StreamStatistics
RECEIVER_ACTIVE_ATTR = "_RTCRtpReceiver__active_ssrc"  # ssrc -> datetime, for getSynchronization…
RECEIVER_RTX_ATTR = "_RTCRtpReceiver__rtx_ssrc"  # RTX ssrc -> media ssrc
RECEIVER_VIDEO_ONLY_ATTRS = (  # None for audio receivers: the lane skips what they do
    "_RTCRtpReceiver__nack_generator",
    "_RTCRtpReceiver__remote_bitrate_estimator",
)
DTLS_RX_BYTES_ATTR = "_RTCDtlsTransport__rx_bytes"
DTLS_RX_PACKETS_ATTR = "_RTCDtlsTransport__rx_packets"
#: the RTCDtlsTransport attribute holding the FastLane installed on it
LANE_ATTR = "_mixer_fast_lane"

#: ``sink(codec, sequence_number, rtp_timestamp, payload)``, called on the event loop
PacketSink = Callable[[Any, int, int, bytes], None]


class _PacketTap:
    """Stands in for the receiver's jitter buffer: every packet goes to ``sink``."""

    def __init__(self, codecs: dict[int, Any], sink: PacketSink) -> None:
        self._codecs = codecs
        self.sink: PacketSink | None = sink
        self.packets = 0

    @property
    def capacity(self) -> int:  # aiortc's JitterBuffer API; nothing in the receiver reads it
        return 16

    def add(self, packet: Any) -> tuple[bool, None]:
        self.packets += 1
        sink = self.sink
        codec = self._codecs.get(packet.payload_type)
        if sink is not None and codec is not None:
            sink(codec, packet.sequence_number, packet.timestamp, packet._data)
        return False, None  # no PLI, no frame for aiortc's decoder


_SEQ_TS = struct.Struct("!HI")


def payload_bounds(packet: bytes) -> tuple[int, int] | None:
    """Where an RTP packet's payload starts and ends; ``None`` when the header is malformed.

    After the fixed header, the CSRCs and any header extension (skipped: the mixer
    needs none), before any padding; ``RtpPacket.parse`` would refuse the same packets.
    """
    end = len(packet)
    if end < 12:
        return None
    first = packet[0]
    start = 12 + 4 * (first & 0x0F)  # after the CSRCs
    if first & 0x10:  # a header extension: 4 bytes of profile and length, then the words
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    if first & 0x20:  # padding: its count is the last byte
        padding = packet[-1]
        if padding == 0:
            return None
        end -= padding
    if first >> 6 != 2 or start > end:
        return None
    return start, end


class _Arrived:
    """What ``StreamStatistics.add`` reads of a packet (one reused per stream)."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self) -> None:
        self.sequence_number = 0
        self.timestamp = 0


class _Stream:
    """One SSRC the lane serves: its receiver, that receiver's tap and tables."""

    __slots__ = ("active", "arrived", "codecs", "receiver", "stats", "tap")

    def __init__(self, receiver: RTCRtpReceiver, tap: _PacketTap, stats: Any) -> None:
        self.receiver = receiver
        self.tap = tap
        self.codecs: dict[int, Any] = getattr(receiver, CODECS_ATTR)
        self.stats = stats
        self.active: dict[int, Any] = getattr(receiver, RECEIVER_ACTIVE_ATTR)
        self.arrived = _Arrived()


class FastLane:
    """Tapped receivers' SRTP packets, from the ICE connection straight to the tap.

    Installed once per ``RTCDtlsTransport`` (``install_fast_lane``); see the module
    docstring for what it does and what it leaves to aiortc.
    """

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        connection = dtls.transport._connection
        self._dtls: Any = dtls  # its private counters are updated below, as aiortc does
        self._routes: dict[int, Any] = dtls._rtp_router.ssrc_table
        self._slow: Callable[[bytes, int], None] = connection.data_received
        self._streams: dict[int, _Stream] = {}
        self.fast_packets = 0
        self.dropped_packets = 0  # SRTP authentication failures and malformed headers
        connection.data_received = self.data_received  # type: ignore[method-assign]

    def _learn(self, ssrc: int, receiver: Any) -> _Stream | None:
        """A ``_Stream`` for ``ssrc`` when its receiver is tapped audio the stock path knows."""
        self._streams.pop(ssrc, None)
        if receiver is None:
            return None
        tap = getattr(receiver, JITTER_BUFFER_ATTR, None)
        if not isinstance(tap, _PacketTap):
            return None
        if any(getattr(receiver, a, None) is not None for a in RECEIVER_VIDEO_ONLY_ATTRS):
            return None
        if ssrc in getattr(receiver, RECEIVER_RTX_ATTR, {}):
            return None  # a retransmission stream: unwrapped by the stock path
        stats = getattr(receiver, RECEIVER_STATS_ATTR, {}).get(ssrc)
        if stats is None:
            return None  # the stock path has not seen it yet: it makes the statistics
        stream = self._streams[ssrc] = _Stream(receiver, tap, stats)
        return stream

    def data_received(self, data: bytes, component: int) -> None:
        """aioice's ``Connection.data_received``: every non-STUN datagram of the connection."""
        srtp = self._dtls._rx_srtp
        if len(data) >= 12 and 127 < data[0] < 192 and srtp is not None and not is_rtcp(data):
            ssrc = int.from_bytes(data[8:12], "big")
            receiver = self._routes.get(ssrc)
            stream = self._streams.get(ssrc)
            if stream is None or stream.receiver is not receiver:
                stream = self._learn(ssrc, receiver)
            if stream is not None:
                self._fast(srtp, stream, ssrc, data)
                return
        self._slow(data, component)

    def _fast(self, srtp: Any, stream: _Stream, ssrc: int, data: bytes) -> None:
        dtls = self._dtls
        dtls._RTCDtlsTransport__rx_bytes += len(data)  # DTLS_RX_BYTES_ATTR
        dtls._RTCDtlsTransport__rx_packets += 1  # DTLS_RX_PACKETS_ATTR
        try:
            plain = srtp.unprotect(data)
        except pylibsrtp.Error:
            self.dropped_packets += 1  # as aiortc: not authentic, or replayed
            return
        if not stream.receiver._enabled:
            return
        bounds = payload_bounds(plain)
        if bounds is None:
            self.dropped_packets += 1
            return
        start, end = bounds
        stream.active[ssrc] = clock.current_datetime()
        codec = stream.codecs.get(plain[1] & 0x7F)
        if codec is None:
            return  # as aiortc: an unknown payload type
        seq, timestamp = _SEQ_TS.unpack_from(plain, 2)
        arrived = stream.arrived
        arrived.sequence_number = seq
        arrived.timestamp = timestamp
        stream.stats.add(arrived)
        tap = stream.tap
        tap.packets += 1
        self.fast_packets += 1
        sink = tap.sink
        if sink is not None:
            sink(codec, seq, timestamp, plain[start:end])


def install_fast_lane(dtls: RTCDtlsTransport) -> FastLane:
    """The ``FastLane`` of ``dtls`` (installed at the first call; idempotent).

    Raises ``RuntimeError`` when aiortc or aioice no longer have what it relies on.
    """
    lane = getattr(dtls, LANE_ATTR, None)
    if isinstance(lane, FastLane):
        return lane
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    router = getattr(dtls, "_rtp_router", None)
    if (
        not callable(getattr(connection, "data_received", None))
        or not isinstance(getattr(router, "ssrc_table", None), dict)
        or not hasattr(dtls, "_rx_srtp")
        or not isinstance(getattr(dtls, DTLS_RX_BYTES_ATTR, None), int)
        or not isinstance(getattr(dtls, DTLS_RX_PACKETS_ATTR, None), int)
    ):
        raise RuntimeError(
            "aiortc's RTCDtlsTransport or aioice's Connection changed: "
            "mixer_ext.connectors.rtptap's fast lane needs updating for this version"
        )
    lane = FastLane(dtls)
    setattr(dtls, LANE_ATTR, lane)
    return lane


def tap_receiver(receiver: RTCRtpReceiver, sink: PacketSink) -> _PacketTap:
    """Send every RTP packet ``receiver`` accepts to ``sink`` instead of aiortc's decoder.

    Call it before media flows (right after the transceiver exists).  Idempotent: a
    receiver tapped already gets the new sink.  Raises ``RuntimeError`` when aiortc's
    receiver no longer has what this relies on.
    """
    current = getattr(receiver, JITTER_BUFFER_ATTR, None)
    if isinstance(current, _PacketTap):
        current.sink = sink
        return current
    codecs = getattr(receiver, CODECS_ATTR, None)
    if (
        current is None
        or not callable(getattr(current, "add", None))
        or not isinstance(codecs, dict)
    ):
        raise RuntimeError(
            "aiortc's RTCRtpReceiver has no jitter buffer to tap: "
            "mixer_ext.connectors.rtptap needs updating for this aiortc version"
        )
    tap = _PacketTap(codecs, sink)
    setattr(receiver, JITTER_BUFFER_ATTR, tap)
    install_fast_lane(receiver.transport)
    return tap


class EncodedFeed:
    """One subscribed track's encoded frames, handed to whoever ``connect``\\ ed (the mixer).

    Frames delivered before ``connect`` or after ``close`` are dropped (the mixer has no
    input for them).  No queue and no task: delivery is a call on the event loop.
    """

    def __init__(self) -> None:
        self._sink: PacketSink | None = None
        self.closed = False

    def connect(self, sink: PacketSink) -> None:
        if not self.closed:
            self._sink = sink

    def close(self) -> None:
        self.closed = True
        self._sink = None

    def deliver(self, codec: Any, seq: int, timestamp: int, payload: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink(codec, seq, timestamp, payload)


def tap_feed(receiver: RTCRtpReceiver) -> EncodedFeed:
    """A new ``EncodedFeed`` fed by ``receiver``'s packets (see ``tap_receiver``)."""
    feed = EncodedFeed()
    tap_receiver(receiver, feed.deliver)
    return feed
