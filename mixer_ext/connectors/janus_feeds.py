"""What the Janus connector subscribes to, and how an m-line's packets find their subscription.

Plain data and media plumbing, no signaling: feed ids, the per-subscription track
(``FeedTrack``), the connector's records of publishers, subscriber connections and
subscriptions, and the SSRC routing that recycled m-lines need.

Recycled m-lines: after a feed is unpublished Janus marks its m-line inactive and
reuses it for the next subscription, with a new SSRC.  Stock aiortc registers a
receiver's SSRCs only the first time it starts, and with several audio m-lines
sharing one payload type it drops packets from an SSRC it does not know.  After
every offer the connector registers the offer's SSRCs with the transport's RTP
router itself (``route_offer_ssrcs``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TypeGuard

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from mixer_ext.connectors.rtptap import EncodedFeed
from mixer_ext.log import log_event

log = logging.getLogger(__name__)

#: frames buffered per subscription before the oldest is dropped (1 s of 20 ms frames)
FEED_QUEUE_FRAMES = 50


#: a Janus participant (feed) id: an integer, or a string when the plugin uses string_ids
FeedId = int | str


def is_feed_id(value: object) -> TypeGuard[FeedId]:
    """A usable feed id: an int (not a bool) or a non-empty string other than "ok"."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value not in ("", "ok"))


def parse_room_id(room: str) -> int | str:
    """VideoRoom id of ``room.name``: numeric string -> integer id, anything else a string id."""
    return int(room) if room.isascii() and room.isdigit() else room


class FeedTrack(MediaStreamTrack):
    """Audio of one subscription: ``recv()`` returns ``av.AudioFrame``, blocks while silent.

    Frames arrive from the m-line's pump; the queue holds ``FEED_QUEUE_FRAMES``
    and drops the oldest when the consumer lags (live audio: the newest
    matters).  pts are re-based to start at 0 for each subscription, because
    a recycled m-line continues the previous feed's RTP timeline.  After
    ``end()`` (unsubscribed, or the connector closed) ``recv()`` raises
    ``MediaStreamError``.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue(FEED_QUEUE_FRAMES)
        self._base_pts: int | None = None
        self.ended = False

    def push(self, frame: av.AudioFrame) -> None:
        if self.ended:
            return
        if frame.pts is not None:
            if self._base_pts is None:
                self._base_pts = frame.pts
            frame.pts -= self._base_pts
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        super().stop()

    def stop(self) -> None:
        self.end()

    async def recv(self) -> av.AudioFrame:
        if self.ended and self._queue.empty():
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self._queue.put_nowait(None)  # later callers see the end too
            raise MediaStreamError
        return frame


@dataclass
class Publisher:
    feed_id: FeedId
    identity: str
    #: publisher mid -> moderated (muted by a moderator)
    audio_mids: dict[str, bool] = field(default_factory=dict)


@dataclass(eq=False)
class SubscriberConnection:
    """One subscriber handle and its PeerConnection: up to ``MLINES_PER_CONNECTION`` feeds."""

    index: int
    handle: int
    pc: RTCPeerConnection
    joined: bool = False
    tapped: set[str] = field(default_factory=set)  # mids whose receiver is tapped


@dataclass
class Subscription:
    feed_id: FeedId
    feed_mid: str
    conn: int  # index of its SubscriberConnection
    sub_mid: str
    identity: str
    track: FeedTrack
    feed: EncodedFeed = field(default_factory=EncodedFeed)

    @property
    def track_sid(self) -> str:
        return f"{self.feed_id}:{self.feed_mid}"


def offer_ssrcs(sdp: str) -> dict[str, list[int]]:
    """mid -> SSRCs announced for it, per media section of an SDP (aiortc's own parser)."""
    out: dict[str, list[int]] = {}
    for media in SessionDescription.parse(sdp).media:
        ssrcs = sorted({s.ssrc for s in media.ssrc})
        if media.rtp.muxId and ssrcs:
            out[media.rtp.muxId] = ssrcs
    return out


def route_offer_ssrcs(pc: RTCPeerConnection, sdp: str) -> None:
    """Point every SSRC of the offer at its m-line's receiver (aiortc only does it once).

    Uses aiortc's ``RTCDtlsTransport._rtp_router`` (private, present in
    aiortc 1.x); if it is missing the connector still works for m-lines
    that are never recycled, and says so in the log.
    """
    by_mid = offer_ssrcs(sdp)
    for transceiver in pc.getTransceivers():
        ssrcs = by_mid.get(transceiver.mid or "")
        if not ssrcs:
            continue
        receiver = transceiver.receiver
        router = getattr(receiver.transport, "_rtp_router", None)
        table = getattr(router, "ssrc_table", None)
        if not isinstance(table, dict):
            log_event(log, "janus: cannot route recycled m-line (aiortc changed)", logging.WARNING)
            return
        for ssrc in ssrcs:
            table[ssrc] = receiver
