"""Forwarding a published track's encoded Opus to its subscribers: no decode, no re-encode.

aiortc's ``RTCRtpReceiver`` reassembles each RTP payload into an encoded frame on the
event loop (``_handle_rtp_packet``) and hands it to a per-track decoder thread through a
``queue.Queue`` (its private ``__decoder_queue``).  ``tap_receiver`` puts a small object in
that queue's place: frames go to a callback on the loop instead of the decoder, and only the
stop marker (``None``) reaches the thread, which then ends the track as before.  The decoder
thread stays blocked on an empty queue: it costs nothing.  This is the one place that knows
aiortc's internals (checked for aiortc 1.16; ``test_forward`` fails if they change).

``PacketFanout`` receives the frames of one published track and gives every subscriber a
``ForwardedTrack``: a ``MediaStreamTrack`` whose ``recv()`` returns ``av.Packet`` (Opus,
``time_base`` 1/48000, ``pts`` = the publisher's RTP timestamp from 0), which aiortc's
``RTCRtpSender`` only packetizes (``Encoder.pack``).  Each subscriber's queue holds at most
``FORWARD_QUEUE_FRAMES`` packets and drops the oldest when its sender falls behind (late is
worse than lost for live audio).  While the publisher is muted nothing is forwarded: the
subscriber's timeline keeps going (the next packet's pts says how long the gap was).

PCMU/PCMA publishers are transcoded once, on the way in, to Opus (``_Transcoder``: one
G.711 decode and one Opus encode per 20 ms frame, on the loop: a few µs each), then
forwarded like Opus.  Subscribers must accept Opus (every browser and aiortc does).
A published track's sinks (``add_sink``: its recorder, issue 23) get the same payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc.codecs import get_decoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

log = logging.getLogger(__name__)

#: 200 ms of 20 ms packets: how far a subscriber may fall behind before packets drop
FORWARD_QUEUE_FRAMES = 10
OPUS_RATE = 48_000
TIME_BASE = fractions.Fraction(1, OPUS_RATE)
_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"

FrameSink = Callable[[Any, Any], None]
#: ``sink(opus_payload, rtp_timestamp)``: a published track's payloads, e.g. to its recorder
PayloadSink = Callable[[bytes, int], None]


class _Tap:
    """Stands in for the receiver's decoder queue (see the module docstring)."""

    def __init__(self, original: queue.Queue[Any], on_frame: FrameSink, on_end: Callable[[], None]):
        self._original = original
        self._on_frame = on_frame
        self._on_end = on_end

    def put(self, item: Any) -> None:
        if item is None:
            self._original.put(None)  # the decoder thread ends the track, as without the tap
            self._on_end()
            return
        codec, encoded_frame = item
        self._on_frame(codec, encoded_frame)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._original.get(*args, **kwargs)


def tap_receiver(receiver: RTCRtpReceiver, on_frame: FrameSink, on_end: Callable[[], None]) -> None:
    """Send ``receiver``'s encoded frames to ``on_frame(codec, frame)`` instead of decoding them.

    ``frame`` has ``.data`` (the codec payload) and ``.timestamp`` (RTP clock, from 0).
    Tapping a receiver again (a twilio-video.js client published a new track on a reused
    m-line) sends its frames to the new callbacks instead.  Raises ``RuntimeError`` when
    aiortc's receiver no longer has the queue this relies on.
    """
    original = getattr(receiver, _QUEUE_ATTR, None)
    if isinstance(original, _Tap):
        original._on_frame, original._on_end = on_frame, on_end
        return
    if not isinstance(original, queue.Queue):
        raise RuntimeError(
            "aiortc's RTCRtpReceiver has no decoder queue to tap: "
            "mixer_ext.roomserver.forward needs updating for this aiortc version"
        )
    setattr(receiver, _QUEUE_ATTR, _Tap(original, on_frame, on_end))


class ForwardedTrack(MediaStreamTrack):
    """One subscriber's copy of a published track, as encoded Opus packets (bounded)."""

    kind = "audio"

    def __init__(self, fanout: PacketFanout) -> None:
        super().__init__()
        self._fanout: PacketFanout | None = fanout
        self._queue: asyncio.Queue[Any] = asyncio.Queue(FORWARD_QUEUE_FRAMES)
        self.dropped = 0

    def _push(self, packet: Any) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(packet)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            if self._fanout is not None:
                self._fanout.unsubscribe(self)
                self._fanout = None
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)  # wake a pending recv()


class _Transcoder:
    """G.711 (or any non-Opus codec aiortc decodes) to Opus, once per published track."""

    def __init__(self, codec: Any) -> None:
        self._decoder = get_decoder(codec)
        self._encoder = OpusEncoder()
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)

    def packets(self, encoded_frame: Any) -> list[tuple[bytes, int]]:
        out: list[tuple[bytes, int]] = []
        for frame in self._decoder.decode(encoded_frame):
            if not isinstance(frame, av.AudioFrame):
                continue
            for resampled in self._resampler.resample(frame):
                payloads, timestamp = self._encoder.encode(resampled)
                out.extend((p, timestamp) for p in payloads)
        return out


class PacketFanout:
    """Forwards one published track's encoded frames to every subscriber.

    ``enabled`` False (the publisher muted) forwards nothing.  Counters: ``frames`` received,
    ``transcoded`` frames that were not Opus.  No task of its own: frames arrive in the
    receiver's own RTP handling on the loop.
    """

    def __init__(self, receiver: RTCRtpReceiver, label: str) -> None:
        self.label = label
        self.enabled = True
        self.frames = 0
        self.transcoded = 0
        self.ended = False
        self._subscribers: set[ForwardedTrack] = set()
        self._sinks: list[PayloadSink] = []
        self._transcoder: _Transcoder | None = None
        tap_receiver(receiver, self._on_frame, self._on_end)

    def subscribe(self) -> ForwardedTrack:
        track = ForwardedTrack(self)
        if self.ended:
            track.stop()
        else:
            self._subscribers.add(track)
        return track

    def unsubscribe(self, track: ForwardedTrack) -> None:
        self._subscribers.discard(track)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def add_sink(self, sink: PayloadSink) -> None:
        """Also hand every forwarded Opus payload to ``sink(payload, rtp_timestamp)`` (the
        track's recorder): called on the loop, it must return at once."""
        self._sinks.append(sink)

    def remove_sink(self, sink: PayloadSink) -> None:
        with contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    def _on_frame(self, codec: Any, encoded_frame: Any) -> None:
        self.frames += 1
        if not self.enabled or not (self._subscribers or self._sinks):
            return
        if codec.mimeType.lower() == "audio/opus":
            self._forward(bytes(encoded_frame.data), int(encoded_frame.timestamp))
            return
        try:
            if self._transcoder is None:
                log.info(
                    "room relay: %s: %s publisher, transcoding to Opus", self.label, codec.name
                )
                self._transcoder = _Transcoder(codec)
            for payload, timestamp in self._transcoder.packets(encoded_frame):
                self.transcoded += 1
                self._forward(payload, timestamp)
        except (av.FFmpegError, ValueError) as exc:
            log.warning("room relay: %s: frame dropped: %s", self.label, exc)

    def _forward(self, payload: bytes, timestamp: int) -> None:
        for sink in self._sinks:
            sink(payload, timestamp)
        for sub in list(self._subscribers):
            packet = av.Packet(payload)
            packet.pts = timestamp
            packet.time_base = TIME_BASE
            sub._push(packet)

    def end(self) -> None:
        """The track is unpublished: every subscriber's copy ends (no await needed)."""
        self._on_end()

    def _on_end(self) -> None:
        if self.ended:
            return
        self.ended = True
        log.info("room relay: published track ended: %s", self.label)
        for sub in list(self._subscribers):
            sub.stop()

    async def stop(self) -> None:
        """End every subscriber's track (the publisher's receiver stops with its connection)."""
        self._on_end()


#: ``on_level(level)``: a packet's RFC 6464 audio level (0 loudest .. 127 silence)
LevelSink = Callable[[int], None]


class _LevelHook:
    """Stands in for a receiver's ``_handle_rtp_packet`` (an instance attribute shadowing
    aiortc's method, which ``RTCDtlsTransport`` calls per routed packet): it reads the
    audio level aiortc already parsed from the header extension, then hands the packet on."""

    def __init__(self, original: Callable[..., Any], on_level: LevelSink) -> None:
        self._original = original
        self.on_level = on_level

    def __call__(self, packet: Any, arrival_time_ms: int) -> Awaitable[None]:
        level = packet.extensions.audio_level
        if level is not None:
            self.on_level(level[1])
        # the stock coroutine itself, for the transport to await: no extra frame per packet
        return self._original(packet, arrival_time_ms)  # type: ignore[no-any-return]


def tap_audio_levels(receiver: RTCRtpReceiver, on_level: LevelSink) -> None:
    """Call ``on_level`` with the RFC 6464 level of every packet ``receiver`` gets (when the
    sender includes ``urn:ietf:params:rtp-hdrext:ssrc-audio-level``, as browsers do): one
    attribute read and a call per packet, no decoding.  Again on the same receiver (reused
    m-line): the levels go to the new callback."""
    current = receiver.__dict__.get("_handle_rtp_packet")
    if isinstance(current, _LevelHook):
        current.on_level = on_level
        return
    hook = _LevelHook(receiver._handle_rtp_packet, on_level)
    receiver._handle_rtp_packet = hook  # type: ignore[method-assign,assignment]
