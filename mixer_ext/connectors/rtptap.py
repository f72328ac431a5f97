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

This module is the only place that knows those internals: checked for aiortc 1.16
(pinned in pyproject.toml); ``tests/test_aiortc_private_api.py`` fails if they change.

``EncodedFeed`` is the per-input end of it (the ``EncodedSource`` of
``mixer_ext.core.frames``): a connector gives one per subscribed track in
``TrackSubscribed.source``, the mixer clock connects its input's ``push_encoded``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver

#: the attribute of RTCRtpReceiver (name-mangled ``__jitter_buffer``) that the tap replaces
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
#: payload type -> RTCRtpCodecParameters, as negotiated (read, never written)
CODECS_ATTR = "_RTCRtpReceiver__codecs"

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
