"""Data tracks: a publisher's messages forwarded to its subscribers (twilio-video.js
``LocalDataTrack.send`` -> ``RemoteDataTrack`` ``message``), never mixed.

The SDK carries a data track on an RTCDataChannel whose label is the track's id, opened by
the publisher with the track's ``ordered``, ``maxPacketLifeTime`` and ``maxRetransmits``;
a subscriber receives it on a channel the server opens with the same three settings, whose
label is the ``id`` the ``subscribed`` state names.

Core (no I/O): ``DataFanout`` takes each message with the time, applies the publisher's rate
limit (one ``TokenBucket`` per participant, shared by its data tracks: messages over it are
dropped, the flooder alone loses them) and queues it for every subscriber.  ``OutQueue``
is bounded (``QUEUE_SIZE`` messages) and drops the oldest when full.

I/O: ``ChannelSink`` drains one subscriber's queue into its aiortc ``RTCDataChannel`` only
while the channel holds less than ``HIGH_WATER`` bytes unsent (aiortc's own SCTP queue has
no bound) and resumes on ``bufferedamountlow``; it never awaits, so it needs no task.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from mixer_ext.roomserver.limits import TokenBucket

log = logging.getLogger(__name__)

#: messages queued for one subscriber before the oldest is dropped
QUEUE_SIZE = 256
#: bytes a subscriber's channel may hold unsent before the queue keeps the rest
HIGH_WATER = 256 * 1024
#: the twilio-video.js limit of one message (``LocalDataTrack.send``): 64 KiB
MAX_MESSAGE_BYTES = 64 * 1024

Message = str | bytes


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """How a data track's channel delivers: the publisher's, repeated to its subscribers."""

    ordered: bool = True
    max_packet_life_time: int | None = None
    max_retransmits: int | None = None


class OutQueue:
    """One subscriber's messages not yet handed to its channel; full, it drops the oldest."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._items: deque[Message] = deque(maxlen=size)
        self.dropped = 0

    def push(self, message: Message) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(message)

    def pop(self) -> Message | None:
        return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class Sink(Protocol):
    """Where a subscriber's messages go (``ChannelSink``; a list in unit tests)."""

    queue: OutQueue

    def deliver(self, message: Message) -> None: ...


class DataFanout:
    """One published data track: its messages to each subscriber's sink.

    ``bucket`` is the publisher's (shared by all its data tracks).  ``accept`` answers
    whether the message was forwarded (False: over the rate limit, or too large)."""

    def __init__(self, label: str, bucket: TokenBucket) -> None:
        self.label = label
        self.bucket = bucket
        self.options = ChannelOptions()
        self.sinks: dict[str, Sink] = {}
        self.limited = 0
        self.forwarded = 0

    def accept(self, message: Message, now: float) -> bool:
        size = len(message.encode() if isinstance(message, str) else message)
        if size > MAX_MESSAGE_BYTES or not self.bucket.take(now):
            self.limited += 1
            return False
        self.forwarded += 1
        for sink in list(self.sinks.values()):
            sink.deliver(message)
        return True


class ChannelSink:
    """One subscription to a data track: its queue drained into an aiortc data channel.

    ``id`` is the channel's label (what the subscriber's ``subscribed`` state names);
    ``channel`` is set once the server's offer carries it (``open``)."""

    def __init__(self, options: ChannelOptions) -> None:
        self.id = secrets.token_hex(16)
        self.options = options
        self.queue = OutQueue()
        self.channel: Any = None
        self.readyState = "live"

    def open(self, channel: Any) -> None:
        """Drain into ``channel`` (an ``RTCDataChannel`` made with ``self.options``)."""
        self.channel = channel
        channel.bufferedAmountLowThreshold = HIGH_WATER // 2
        channel.on("open", self.drain)
        channel.on("bufferedamountlow", self.drain)

    def deliver(self, message: Message) -> None:
        self.queue.push(message)
        self.drain()

    def drain(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        while len(self.queue) and channel.bufferedAmount < HIGH_WATER:
            message = self.queue.pop()
            if message is None:
                return
            try:
                channel.send(message)
            except Exception as exc:  # the association ended: the subscriber is going
                log.debug("room server: data channel %s: %s", self.id, exc)
                return

    def stop(self) -> None:
        self.readyState = "ended"
        channel, self.channel = self.channel, None
        if channel is not None:
            try:
                channel.close()
            except Exception as exc:
                log.debug("room server: data channel %s close: %s", self.id, exc)
