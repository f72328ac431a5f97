"""Janus VideoRoom connector: the bot in a room on a Janus SFU.

The bot uses one Janus session (``JanusSession``) with two VideoRoom handles:

- a *publisher-type* handle that joins with ``display`` = the bot's identity
  and never publishes.  It receives the room's events: ``joining``
  (needs ``notify_joining`` on the room), ``publishers``, ``unpublished``,
  ``leaving``, ``moderation``, ``destroyed``.
- *subscriber* handles (``join`` ptype subscriber with the audio ``streams``
  of publishers, later ``subscribe``), each with its own PeerConnection of at
  most ``MLINES_PER_CONNECTION`` active feeds, so a renegotiation costs the
  same in a room of 250 as in a room of 20.  Janus sends the SDP offer,
  aiortc answers, ``start``.  Janus renegotiates on its own (``updated``)
  when a feed goes away.  Streams announced within ``JOIN_COALESCE_WINDOW``
  are subscribed together (one renegotiation per connection for a burst).

Participants are Janus *publishers*; their identity is the publisher's
``display`` (``janus-<id>`` when it has none).  A participant's audio is one
``TrackSubscribed`` per publisher audio stream, ``track_sid`` =
``"<feed id>:<publisher mid>"``.  Moderation mute maps to
``TrackEnabledChanged(enabled=False)``; video is never subscribed.

Missed announcements: Janus can fail to announce a publisher (Debian's 1.1.2
does, for remote publishers added at once).  Every ``RECONCILE_INTERVAL`` s and
shortly after each burst the connector lists the room's participants and
handles any publisher it was never told about as if the event had come
(``mixer_ext.connectors.janus_reconcile``).

Recycled m-lines: Janus reuses an inactive m-line with a new SSRC, which stock
aiortc ignores; after every offer the connector routes the offer's SSRCs itself
(``mixer_ext.connectors.janus_feeds``). And because aiortc keeps one receiver per
m-line, the connector taps each audio m-line's receiver once
(``mixer_ext.connectors.rtptap``) and routes its encoded payloads to whichever
subscription holds the m-line now: each subscription has its own ``EncodedFeed``
(``TrackSubscribed.source``) and its own ``FeedTrack`` (ended when the subscription
ends), so a consumer that stops what it was given for one feed never stops the
m-line for the next.

Everything runs on one named task (``janus-room``) that consumes the
session's events in order and does all signaling, so renegotiations never
interleave.  The connector never reconnects: a destroyed session or a
closed websocket ends ``events()`` with ``Disconnected("connection-lost")``
and the worker decides.

Why one module (about 800 lines): the publisher handle's events, the subscriber
handles' renegotiations, the coalescing window and the reconciliation all run on that
one task and share its state (publishers, subscriptions, connections); what has no
part in that state is apart: the session transport (``janus_session``), the
subscription records and SSRC routing (``janus_feeds``) and the reconciliation's
rules (``janus_reconcile``, sans-I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.exceptions import InvalidHandshake

from mixer_ext import metrics
from mixer_ext.connectors.base import (
    Disconnected,
    ParticipantJoined,
    ParticipantLeft,
    Reason,
    RoomConnectError,
    RoomConnector,
    RoomEvent,
    TrackEnabledChanged,
    TrackSubscribed,
    TrackUnsubscribed,
)
from mixer_ext.connectors.janus_feeds import (
    FeedId,
    FeedTrack,
    Publisher,
    SubscriberConnection,
    Subscription,
    is_feed_id,
    offer_ssrcs,
    parse_room_id,
    route_offer_ssrcs,
)
from mixer_ext.connectors.janus_reconcile import (
    RECONCILE_AFTER_JOINS,
    RECONCILE_GRACE,
    RECONCILE_INTERVAL,
    ListedPublisher,
    PublisherReconciler,
    publishers_from_streams,
)
from mixer_ext.connectors.janus_session import (
    JanusError,
    JanusSession,
    JanusSessionClosed,
    drop_message,
    plugin_data,
)
from mixer_ext.connectors.rtptap import tap_receiver
from mixer_ext.log import log_event
from mixer_ext.redact import redact_url
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

__all__ = [
    "FeedId",
    "FeedTrack",
    "JanusRoomConnector",
    "is_feed_id",
    "offer_ssrcs",
    "parse_room_id",
]

VIDEOROOM = "janus.plugin.videoroom"
#: connector events buffered for the consumer; when full the room task waits (backpressure)
EVENT_QUEUE_SIZE = 1000
#: seconds new publishers' streams wait to be subscribed together in one renegotiation.
#: Every renegotiation re-parses and re-answers *every* m-line of the subscriber
#: PeerConnection (aiortc: ~0.23 ms of the loop per m-line), so one renegotiation per
#: join made a burst of N joins cost O(N^2) and blocked the loop for seconds; a join
#: waits at most this long for its audio, and a burst costs a few renegotiations.
JOIN_COALESCE_WINDOW = 0.25
#: audio m-lines per subscriber PeerConnection.  setRemoteDescription, createAnswer and
#: setLocalDescription each walk every transceiver of the connection (about 0.1 ms of
#: the loop per m-line each, 3-4x that under load), so with at most this many per
#: connection a renegotiation costs the same at 250 participants as at 20 and each
#: step stays well inside a 20 ms tick.  Janus recycles a connection's inactive
#: m-lines, so the bound counts active subscriptions.
MLINES_PER_CONNECTION = 24
#: a stream whose subscribe Janus refuses is tried again in this many later windows
SUBSCRIBE_RETRIES = 3
#: the local event that ends a coalescing window (never sent by Janus)
FLUSH_JOINS = "mixer-flush-joins"
#: the local event that asks Janus for the room's participants (``janus_reconcile``)
RECONCILE = "mixer-reconcile"

# Janus core and VideoRoom error codes that say why joining failed.
_REFUSALS: dict[int, tuple[str, str]] = {
    403: (Reason.UNAUTHORIZED, "unauthorized (API secret or token refused)"),
    405: (Reason.UNAUTHORIZED, "unauthorized to use the VideoRoom plugin"),
    460: (Reason.PROTOCOL_ERROR, "VideoRoom plugin not available on this Janus"),
    426: (Reason.ROOM_ENDED, "no such room"),
    433: (Reason.UNAUTHORIZED, "unauthorized (room pin or token)"),
    432: (Reason.ROOM_FULL, "room is full"),
}


class JanusRoomConnector(RoomConnector):
    """The bot in one Janus VideoRoom.  See the module docstring for the protocol."""

    def __init__(
        self,
        url: str,
        room: str,
        identity: str,
        *,
        api_secret: str | None = None,
        token: str | None = None,
        tap: bool = True,
    ) -> None:
        super().__init__(room, identity)
        self.url = url
        self.room_id = parse_room_id(room)
        self._session = JanusSession(url, api_secret=api_secret, token=token, name="janus-bot")
        self._pub_handle: int | None = None
        self._own_id: FeedId | None = None
        self._private_id: int | None = None
        #: subscriber connections, by index; subscriptions are spread over them
        self._conns: list[SubscriberConnection] = []
        self._participants: dict[FeedId, str] = {}  # janus id -> identity
        self._publishers: dict[FeedId, Publisher] = {}
        #: (connection index, subscriber mid) -> subscription
        self._subs: dict[tuple[int, str], Subscription] = {}
        #: streams announced but not yet subscribed; a timer queues FLUSH_JOINS behind the
        #: session's events when the window ends, so the room task handles it in order
        self._wanted: list[dict[str, Any]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        #: (feed, publisher mid) -> refused subscribe attempts so far
        self._tries: dict[tuple[FeedId, str], int] = {}
        #: publishers Janus lists but never announced (``janus_reconcile``); its timer
        #: queues RECONCILE like FLUSH_JOINS
        self._reconciler = PublisherReconciler(ignore_display=identity)
        self._reconcile_timer: asyncio.TimerHandle | None = None
        self.tap = tap  # False: stock aiortc, one pump task per m-line reads decoded frames
        #: (connection index, subscriber mid) -> pump (tap False)
        self._pumps: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._events: asyncio.Queue[RoomEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._room_task: asyncio.Task[None] | None = None
        self._teardown_task: asyncio.Task[None] | None = None

    # --- RoomConnector ---------------------------------------------------------

    async def connect(self) -> None:
        where = redact_url(self.url)
        try:
            await self._session.open()
            self._pub_handle = await self._session.attach(VIDEOROOM)
            data, _ = await self._session.message(
                self._pub_handle,
                {
                    "request": "join",
                    "ptype": "publisher",
                    "room": self.room_id,
                    "display": self.identity,
                },
            )
            await self._new_connection()
        except JanusError as exc:
            await self._session.close()
            reason, what = _REFUSALS.get(exc.code, (Reason.PROTOCOL_ERROR, exc.reason))
            raise RoomConnectError(
                f"janus refused to join room {self.room_id!r}: {what} ({exc.code})", reason=reason
            ) from exc
        except (OSError, InvalidHandshake, TimeoutError, JanusSessionClosed) as exc:
            await self._session.close()
            raise RoomConnectError(f"cannot reach janus at {where}: {exc}") from exc
        own = data.get("id")
        self._own_id = own if is_feed_id(own) else None
        self._reconciler.own_id = self._own_id
        pvt = data.get("private_id")
        self._private_id = pvt if isinstance(pvt, int) else None
        metrics.ROOM_JOINS.inc()
        log_event(log, "janus joined", room=str(self.room_id), identity=self.identity)
        self._room_task = asyncio.create_task(self._run(data), name="janus-room")

    async def events(self) -> AsyncIterator[RoomEvent]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Disconnected):
                return

    async def disconnect(self) -> None:
        if self._room_task is not None and not self._room_task.done():
            if self._pub_handle is not None and not self._session.closed.is_set():
                with contextlib.suppress(Exception):
                    await self._session.message(self._pub_handle, {"request": "leave"}, within=3)
            await stop_tasks([self._room_task])
        await self._teardown(Reason.LEFT)

    async def _new_connection(self) -> SubscriberConnection:
        """Attach one more subscriber handle, with its own PeerConnection."""
        handle = await self._session.attach(VIDEOROOM)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        conn = SubscriberConnection(len(self._conns), handle, pc)
        self._conns.append(conn)

        @pc.on("connectionstatechange")
        def _on_connection_state() -> None:
            # Janus notices a dead media path late (or never, if only our side
            # lost it): treat a failed PeerConnection like Janus' hangup.
            if pc.connectionState == "failed":
                self._session.post_local_event(
                    {"janus": "hangup", "sender": handle, "reason": "ICE/DTLS failed"}
                )

        return conn

    def peer_connections(self) -> list[RTCPeerConnection]:
        """The subscriber PeerConnections, one per ``MLINES_PER_CONNECTION`` feeds (for tests)."""
        return [conn.pc for conn in self._conns]

    def _conn_of(self, handle: object) -> SubscriberConnection | None:
        for conn in self._conns:
            if conn.handle == handle:
                return conn
        return None

    # --- the room task ----------------------------------------------------------

    async def _run(self, joined: dict[str, Any]) -> None:
        reason: str = Reason.CONNECTION_LOST
        try:
            for attendee in _list(joined.get("attendees")):
                self._on_joining(attendee)
            await self._on_publishers(_list(joined.get("publishers")))
            await self._flush_wanted()  # those already in: at once
            self._schedule_reconcile(RECONCILE_INTERVAL)
            while True:
                msg = await self._session.next_event()
                if msg is None:
                    log_event(
                        log,
                        "janus session ended",
                        logging.WARNING,
                        detail=self._session.close_detail,
                    )
                    break
                end = await self._on_event(msg)
                if end is not None:
                    reason = end
                    break
        except asyncio.CancelledError:
            raise
        except (JanusSessionClosed, JanusError, TimeoutError) as exc:
            log_event(log, "janus signaling failed", logging.WARNING, error=str(exc))
        except Exception:  # the task's top level: log where it came from, then disconnect
            log.exception("janus: room task failed")
        await self._teardown(reason)

    async def _flush_wanted(self) -> None:
        """One subscribe (one renegotiation) for every stream announced in the window."""
        wanted = [
            w
            for w in self._wanted
            if w["feed"] in self._publishers and w["mid"] in self._publishers[w["feed"]].audio_mids
        ]
        self._wanted.clear()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not wanted:
            return
        metrics.JANUS_COALESCED_JOINS.observe(len(wanted))
        # streams refused before go one per request, so that one bad stream (a feed
        # gone from Janus) cannot keep the others of its request out
        retries = [w for w in wanted if (w["feed"], w["mid"]) in self._tries]
        wanted = [w for w in wanted if (w["feed"], w["mid"]) not in self._tries]
        plan: dict[int, list[list[dict[str, Any]]]] = {}
        active = [0] * len(self._conns)
        for sub in self._subs.values():
            active[sub.conn] += 1
        for conn in self._conns:
            free = max(0, MLINES_PER_CONNECTION - active[conn.index])
            if free and (wanted or retries):
                take, wanted = wanted[:free], wanted[free:]
                free -= len(take)
                alone, retries = retries[:free], retries[free:]
                plan[conn.index] = [take] if take else []
                plan[conn.index] += [[w] for w in alone]
        while wanted or retries:
            conn = await self._new_connection()
            take, wanted = wanted[:MLINES_PER_CONNECTION], wanted[MLINES_PER_CONNECTION:]
            free = MLINES_PER_CONNECTION - len(take)
            alone, retries = retries[:free], retries[free:]
            plan[conn.index] = ([take] if take else []) + [[w] for w in alone]
        for index, requests in plan.items():
            for streams in requests:
                await self._subscribe(self._conns[index], streams)
        # a burst of joins is when Janus 1.1.2 loses announcements: check soon
        self._schedule_reconcile(RECONCILE_AFTER_JOINS)

    # --- reconciliation: publishers Janus never announced (janus_reconcile) -------------

    def _schedule_reconcile(self, delay: float) -> None:
        """Queue RECONCILE in ``delay`` s, unless one is already due sooner."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if self._reconcile_timer is not None:
            if self._reconcile_timer.when() <= when:
                return
            self._reconcile_timer.cancel()
        self._reconcile_timer = loop.call_at(
            when, self._session.post_local_event, {"janus": RECONCILE}
        )

    async def _reconcile(self) -> None:
        """List the room; announce to ourselves any publisher Janus never announced."""
        self._reconcile_timer = None
        if self._pub_handle is None:
            return
        try:
            data, _ = await self._session.message(
                self._pub_handle, {"request": "listparticipants", "room": self.room_id}
            )
        except JanusError as exc:
            log_event(log, "janus: listparticipants refused", logging.WARNING, error=str(exc))
            data = {}
        now = asyncio.get_running_loop().time()
        missing = self._reconciler.observe(data.get("participants"), self._publishers, now)
        if missing:
            await self._repair(missing)
        self._schedule_reconcile(
            RECONCILE_GRACE if self._reconciler.pending else RECONCILE_INTERVAL
        )

    async def _repair(self, missing: list[ListedPublisher]) -> None:
        """Learn the missing publishers' streams and handle them as the lost event would."""
        displays = {p.feed_id: p.display for p in missing}
        streams = await self._streams_of(list(displays))
        if streams is None and len(displays) > 1:  # one of them refused: each on its own
            found: list[Any] = []
            for feed in displays:
                found += await self._streams_of([feed]) or []
            streams = found
        publishers = publishers_from_streams(streams, displays)
        if not publishers:
            return
        self._reconciler.repaired([p["id"] for p in publishers])
        metrics.JANUS_REPAIRED_ANNOUNCEMENTS.inc(len(publishers))
        log_event(
            log,
            "janus: publishers never announced by Janus, found in its listing",
            logging.WARNING,
            count=len(publishers),
            feeds=",".join(str(p["id"]) for p in publishers)[:200],
        )
        await self._on_publishers(publishers)

    async def _streams_of(self, feeds: list[FeedId]) -> list[Any] | None:
        """The streams of ``feeds`` (Janus' ``attached`` list), from a throw-away handle.

        A subscriber handle that joins with ``{"feed": id}`` is told every stream of
        that feed; it never answers the offer and is detached at once.  None when
        Janus refuses (e.g. one of the feeds left meanwhile).
        """
        handle = await self._session.attach(VIDEOROOM)
        try:
            data, _ = await self._session.message(
                handle,
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": self.room_id,
                    "streams": [{"feed": f} for f in feeds],
                },
            )
            return _list(data.get("streams"))
        except JanusError as exc:
            log_event(log, "janus: stream listing refused", logging.WARNING, error=str(exc))
            return None
        finally:
            with contextlib.suppress(JanusError, TimeoutError):
                await self._session.detach(handle)

    async def _on_event(self, msg: dict[str, Any]) -> str | None:
        """Handle one server event; returns a disconnect reason when the bot is out."""
        kind = msg["janus"]
        sender = msg.get("sender")
        if kind == "timeout":
            return Reason.CONNECTION_LOST
        if kind == FLUSH_JOINS:
            await self._flush_wanted()
            return None
        if kind == RECONCILE:
            await self._reconcile()
            return None
        conn = self._conn_of(sender) if sender is not None else None
        if conn is not None and kind in ("hangup", "detached"):
            log_event(log, "janus subscriber media ended", logging.WARNING, janus=kind)
            return Reason.CONNECTION_LOST
        if sender == self._pub_handle and kind == "detached":
            return Reason.CONNECTION_LOST
        if kind != "event":
            return None  # webrtcup, media, slowlink, trickle: nothing to do
        data = plugin_data(msg)
        if data is None:
            drop_message("event-without-plugindata", str(msg)[:120])
            return None
        if conn is not None:
            await self._on_subscriber_event(conn, data, msg.get("jsep"))
            return None
        if sender != self._pub_handle:
            drop_message("unknown-sender", str(sender))
            return None
        vr = data.get("videoroom")
        if vr == "destroyed":
            return Reason.ROOM_ENDED
        if vr != "event":
            if vr not in ("talking", "stopped-talking", "slow_link"):
                drop_message("unexpected-videoroom", str(vr))
            return None
        if "error" in data or "error_code" in data:
            drop_message("plugin-error", str(data.get("error")))
            return None
        if "joining" in data:
            self._on_joining(data["joining"])
        if "publishers" in data:
            await self._on_publishers(_list(data["publishers"]))
        if "unpublished" in data:
            if data["unpublished"] == "ok":
                return None
            self._on_unpublished(data["unpublished"])
        for key in ("leaving", "kicked"):
            if key in data:
                who = data[key]
                if who == "ok" or who == self._own_id:
                    return Reason.LEFT
                self._on_leaving(who)
        if "moderation" in data:
            self._on_moderation(data)
        return None

    # --- participants --------------------------------------------------------------

    def _identity_of(self, feed_id: FeedId, display: object) -> str:
        """The publisher's ``display``; made unique when another participant already has it.

        Janus does not enforce unique displays, but identities key the
        mixer's inputs and the metadata, so a second ``alice`` becomes
        ``alice~<feed id>``.  No display at all gives ``janus-<feed id>``.
        """
        if not isinstance(display, str) or not display:
            return f"janus-{feed_id}"
        known = self._participants.get(feed_id)
        if known is not None:
            return known
        if display in self._participants.values():
            log_event(log, "janus: duplicate display", logging.WARNING, display=display)
            return f"{display}~{feed_id}"
        return display

    def _on_joining(self, who: object) -> None:
        if not isinstance(who, dict) or not is_feed_id(who.get("id")):
            drop_message("bad-joining", str(who)[:120])
            return
        self._add_participant(who["id"], self._identity_of(who["id"], who.get("display")))

    def _add_participant(self, feed_id: FeedId, identity: str) -> bool:
        if feed_id == self._own_id or identity == self.identity:
            return False  # the bot itself (or someone using its identity) is never mixed
        if feed_id not in self._participants:
            self._participants[feed_id] = identity
            self._emit(ParticipantJoined(identity))
        return True

    async def _on_publishers(self, publishers: list[Any]) -> None:
        wanted: list[dict[str, Any]] = []
        for pub in publishers:
            if not isinstance(pub, dict) or not is_feed_id(pub.get("id")):
                drop_message("bad-publisher", str(pub)[:120])
                continue
            feed_id: FeedId = pub["id"]
            identity = self._participants.get(feed_id) or self._identity_of(
                feed_id, pub.get("display")
            )
            if not self._add_participant(feed_id, identity):
                continue
            entry = self._publishers.setdefault(feed_id, Publisher(feed_id, identity))
            for stream in _list(pub.get("streams")):
                if not isinstance(stream, dict) or stream.get("type") != "audio":
                    continue
                mid = stream.get("mid")
                if not isinstance(mid, str) or stream.get("disabled"):
                    continue
                if mid in entry.audio_mids or self._sub_for(feed_id, mid) is not None:
                    continue
                entry.audio_mids[mid] = bool(stream.get("moderated", False))
                wanted.append({"feed": feed_id, "mid": mid})
        self._want(wanted)

    def _want(self, streams: list[dict[str, Any]]) -> None:
        """Subscribe ``streams`` when the coalescing window (started by the first) ends."""
        if not streams:
            return
        self._wanted.extend(streams)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                JOIN_COALESCE_WINDOW, self._session.post_local_event, {"janus": FLUSH_JOINS}
            )

    def _on_unpublished(self, feed_id: object) -> None:
        if not is_feed_id(feed_id):
            drop_message("bad-unpublished", str(feed_id))
            return
        self._publishers.pop(feed_id, None)
        for sub in [s for s in self._subs.values() if s.feed_id == feed_id]:
            self._end_subscription(sub)

    def _on_leaving(self, feed_id: object) -> None:
        if not is_feed_id(feed_id):
            drop_message("bad-leaving", str(feed_id))
            return
        self._on_unpublished(feed_id)
        identity = self._participants.pop(feed_id, None)
        if identity is not None:
            self._emit(ParticipantLeft(identity, Reason.LEFT))

    def _on_moderation(self, data: dict[str, Any]) -> None:
        feed_id, mid, what = data.get("id"), data.get("mid"), data.get("moderation")
        if not is_feed_id(feed_id) or what not in ("muted", "unmuted"):
            drop_message("bad-moderation", str(data)[:120])
            return
        muted = what == "muted"
        pub = self._publishers.get(feed_id)
        mids = [mid] if isinstance(mid, str) else list(pub.audio_mids) if pub else []
        for m in mids:
            if pub is not None and m in pub.audio_mids:
                pub.audio_mids[m] = muted
            sub = self._sub_for(feed_id, m)
            if sub is not None:
                self._emit(TrackEnabledChanged(sub.identity, sub.track_sid, not muted))

    # --- subscriber handle -------------------------------------------------------------

    async def _subscribe(self, conn: SubscriberConnection, streams: list[dict[str, Any]]) -> None:
        """Join ``conn`` with ``streams`` or add them to it; a refusal is retried, never fatal."""
        try:
            await self._subscribe_once(conn, streams)
        except JanusError as exc:
            # e.g. a feed left between its announcement and our request (the next
            # window drops it: it is no longer a publisher), or Janus refused a
            # renegotiation racing another on this handle: try again in the next window
            retry = []
            for stream in streams:
                key = (stream["feed"], stream["mid"])
                tries = self._tries.get(key, 0) + 1
                if tries <= SUBSCRIBE_RETRIES:
                    self._tries[key] = tries
                    retry.append(stream)
                else:
                    self._tries.pop(key, None)
                    pub = self._publishers.get(stream["feed"])
                    if pub is not None:  # a later announcement may try again
                        pub.audio_mids.pop(stream["mid"], None)
            metrics.JANUS_SUBSCRIBE_REFUSALS.inc()
            log_event(
                log,
                "janus subscribe refused",
                logging.WARNING,
                error=str(exc),
                streams=len(streams),
                retried=len(retry),
            )
            self._want(retry)

    async def _subscribe_once(
        self, conn: SubscriberConnection, streams: list[dict[str, Any]]
    ) -> None:
        if not conn.joined:
            body: dict[str, Any] = {
                "request": "join",
                "ptype": "subscriber",
                "room": self.room_id,
                "streams": streams,
            }
            if self._private_id is not None:
                body["private_id"] = self._private_id
            data, jsep = await self._session.message(conn.handle, body)
            conn.joined = True
            await self._on_subscriber_event(conn, data, jsep)
            return
        # The reply is the "updated" offer itself, or "updating" when Janus
        # queues this change behind another one: then the offer arrives
        # later as an event, handled in order by this task.
        data, jsep = await self._session.message(
            conn.handle, {"request": "subscribe", "streams": streams}
        )
        await self._on_subscriber_event(conn, data, jsep)

    async def _on_subscriber_event(
        self, conn: SubscriberConnection, data: dict[str, Any], jsep: object
    ) -> None:
        vr = data.get("videoroom")
        if "error" in data or "error_code" in data:
            drop_message("subscriber-error", str(data.get("error")))
            return
        if (
            isinstance(jsep, dict)
            and jsep.get("type") == "offer"
            and isinstance(jsep.get("sdp"), str)
        ):
            await self._answer(conn, jsep["sdp"])
        elif vr not in ("attached", "updated", "event", "updating"):
            drop_message("unexpected-subscriber-event", str(vr))
        if vr in ("attached", "updated") and isinstance(data.get("streams"), list):
            self._apply_streams(conn, data["streams"])

    async def _answer(self, conn: SubscriberConnection, sdp: str) -> None:
        """Answer one offer of ``conn``, giving the loop back between aiortc's steps.

        aiortc's setRemoteDescription, createAnswer and setLocalDescription rarely
        suspend, so the whole answer used to be one step of the loop: 10-15 ms of CPU
        for 24 m-lines here (setRemoteDescription 3-8, the SSRC routing 1, createAnswer
        1.5, setLocalDescription 2-9), over one tick's budget on a busy core.  A
        ``sleep(0)`` after each lets the mixer's tick and the RTP in between; nothing
        else signals on this connection meanwhile (only this task does).
        """
        pc = conn.pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await asyncio.sleep(0)
        route_offer_ssrcs(pc, sdp)
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if transceiver.kind != "audio" or not mid:
                continue
            key = (conn.index, mid)
            if self.tap and mid not in conn.tapped:
                tap_receiver(transceiver.receiver, functools.partial(self._deliver, key))
                conn.tapped.add(mid)
            elif not self.tap and key not in self._pumps:
                self._pumps[key] = asyncio.create_task(
                    self._pump(key, transceiver), name=f"janus-pump-{conn.index}-{mid}"
                )
        await asyncio.sleep(0)
        answer = await pc.createAnswer()
        await asyncio.sleep(0)
        await pc.setLocalDescription(answer)
        answer = pc.localDescription
        await self._session.message(
            conn.handle, {"request": "start"}, {"type": answer.type, "sdp": answer.sdp}
        )
        metrics.JANUS_RENEGOTIATIONS.inc()

    def _apply_streams(self, conn: SubscriberConnection, streams: list[Any]) -> None:
        """Make ``conn``'s subscriptions match Janus' list of its streams (mid -> feed)."""
        active: dict[str, tuple[FeedId, str]] = {}
        for s in streams:
            if not isinstance(s, dict) or s.get("type") != "audio":
                continue
            mid, feed, feed_mid = s.get("mid"), s.get("feed_id"), s.get("feed_mid")
            if (
                s.get("active", True)
                and isinstance(mid, str)
                and is_feed_id(feed)
                and isinstance(feed_mid, str)
            ):
                active[mid] = (feed, feed_mid)
        for sub in list(self._subs.values()):
            if sub.conn == conn.index and active.get(sub.sub_mid) != (sub.feed_id, sub.feed_mid):
                self._end_subscription(sub)
        for mid, (feed, feed_mid) in active.items():
            if (conn.index, mid) in self._subs:
                continue
            pub = self._publishers.get(feed)
            if pub is None:
                continue  # gone already (unpublished while the offer was on its way)
            self._tries.pop((feed, feed_mid), None)
            sub = Subscription(feed, feed_mid, conn.index, mid, pub.identity, FeedTrack())
            self._subs[(conn.index, mid)] = sub
            moderated = pub.audio_mids.get(feed_mid, False)
            log_event(log, "janus subscribed", identity=sub.identity, track=sub.track_sid, mid=mid)
            feed = sub.feed if self.tap else None
            self._emit(TrackSubscribed(sub.identity, sub.track_sid, sub.track, not moderated, feed))

    def _end_subscription(self, sub: Subscription) -> None:
        if self._subs.get((sub.conn, sub.sub_mid)) is sub:
            del self._subs[(sub.conn, sub.sub_mid)]
            pub = self._publishers.get(sub.feed_id)
            if pub is not None:
                pub.audio_mids.pop(sub.feed_mid, None)
            sub.track.end()
            sub.feed.close()
            log_event(log, "janus unsubscribed", identity=sub.identity, track=sub.track_sid)
            self._emit(TrackUnsubscribed(sub.identity, sub.track_sid))

    def _sub_for(self, feed_id: FeedId, feed_mid: str) -> Subscription | None:
        for sub in self._subs.values():
            if sub.feed_id == feed_id and sub.feed_mid == feed_mid:
                return sub
        return None

    async def _pump(self, key: tuple[int, str], transceiver: RTCRtpTransceiver) -> None:
        """(``tap`` False) Decoded frames of one m-line to whichever subscription holds it."""
        track = transceiver.receiver.track
        try:
            while True:
                frame = await track.recv()
                sub = self._subs.get(key)
                if sub is not None and isinstance(frame, av.AudioFrame):
                    sub.track.push(frame)
        except MediaStreamError:
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("janus: pump for m-line %s failed", key)

    def _deliver(
        self, key: tuple[int, str], codec: Any, seq: int, timestamp: int, payload: bytes
    ) -> None:
        """One RTP payload of m-line ``key``: to whichever subscription holds it now."""
        sub = self._subs.get(key)
        if sub is not None:
            sub.feed.deliver(codec, seq, timestamp, payload)

    # --- events out, teardown ------------------------------------------------------------

    def _emit(self, event: RoomEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            # The consumer stopped reading; a room event is never silently lost.
            log_event(log, "janus: event queue full, disconnecting", logging.ERROR)
            raise JanusSessionClosed("consumer not reading events") from None

    async def _teardown(self, reason: str) -> None:
        """Release everything once and emit the final ``Disconnected``.

        The work runs in its own task (``janus-teardown``) so that cancelling
        the room task halfway through its own teardown cannot leak the
        session or the PeerConnection: ``disconnect()`` awaits the same task.
        """
        if self._teardown_task is None:
            self._teardown_task = asyncio.create_task(self._release(reason), name="janus-teardown")
        await asyncio.shield(self._teardown_task)

    async def _release(self, reason: str) -> None:
        for timer in (self._flush_timer, self._reconcile_timer):
            if timer is not None:
                timer.cancel()
        for sub in list(self._subs.values()):
            with contextlib.suppress(JanusSessionClosed):  # queue full: Disconnected says it all
                self._end_subscription(sub)
        await stop_tasks(list(self._pumps.values()))
        self._pumps.clear()
        for conn in self._conns:
            conn.tapped.clear()
            with contextlib.suppress(Exception):
                await conn.pc.close()
        await self._session.close()
        log_event(log, "janus disconnected", reason=str(reason))
        while self._events.full():  # make room: Disconnected must be the last event
            self._events.get_nowait()
        self._events.put_nowait(Disconnected(str(reason)))


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
