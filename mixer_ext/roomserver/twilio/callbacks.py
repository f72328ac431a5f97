"""Room status callbacks, signed as Twilio signs webhooks.

Twilio's signature (``X-Twilio-Signature``): base64 of HMAC-SHA1, keyed with the account's
auth token (``MIXER_AUTH_TOKEN``), over the callback URL followed by every POST parameter's
name and value, sorted by name (``twilio.request_validator.RequestValidator`` checks it).
For ``GET`` callbacks the parameters are in the URL and only the URL is signed.

Events: ``room-created``, ``participant-connected``, ``participant-disconnected``,
``track-added``, ``track-removed``, ``track-enabled``, ``track-disabled``, ``room-ended`` (and
``recording-*``/``composition-*`` from ``roomserver/recordings.py``); parameters as Twilio
sends them (``RoomSid``, ``RoomName``, ``RoomStatus``, ``StatusCallbackEvent``,
``SequenceNumber``, ``ParticipantSid``... ``TrackSid``...).  Twilio's event list has no
``participant-reconnecting``/``-reconnected``: a reconnecting participant shows only as
``status: reconnecting`` over REST.

Delivery, per room (``key``: the ``RoomSid``, else the ``CompositionSid``, else the URL), in
order: one task per key with something to send (``twilio-callbacks-<key>``, kept, ended when
its queue is empty, cancelled and awaited by ``stop``), a bounded queue per key
(``ROOM_QUEUE_SIZE``, drops the *oldest* and counts it in ``dropped``: a slow or dead receiver
never makes memory grow, and a room's receiver never delays another room's).  A timeout
(``REQUEST_TIMEOUT``), a connection error, HTTP 429 or 5xx is retried after a "full jitter"
backoff (uniform in 0..min(``BACKOFF_CAP``, ``BACKOFF_BASE`` * 2^(attempt-1))), at most
``MAX_ATTEMPTS`` attempts and ``MAX_EVENT_SECONDS`` per event; then the event is given up
(logged, ``failed``) and the next one goes.  Other 4xx are final.  Outcomes are counted in
``mixer_room_server_status_callbacks_total{outcome}`` (no URL in any label).  The URL is
logged without its query string (it may carry secrets).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import aiohttp

from mixer_ext import metrics
from mixer_ext.roomserver.twilio import rest as r
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: pending callbacks per room; past it the oldest is dropped
ROOM_QUEUE_SIZE = 200
REQUEST_TIMEOUT = 5.0
MAX_ATTEMPTS = 5
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
#: rooms whose SequenceNumber is kept (the least recently used is forgotten past it)
SEQUENCE_ROOMS = 10_000
#: an event is given up once this long has passed since its first attempt
MAX_EVENT_SECONDS = 60.0


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request to ``url`` with form ``params``."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def event_params(
    record: r.RoomRecord,
    event: str,
    seq: int,
    participant: r.ParticipantRecord | None = None,
    track: r.TrackRecord | None = None,
) -> dict[str, str]:
    params = {
        "AccountSid": record.account_sid,
        "RoomName": record.unique_name,
        "RoomSid": record.sid,
        "RoomStatus": record.status,
        "RoomType": record.type,
        "StatusCallbackEvent": event,
        "Timestamp": r.iso(r.now_utc()) or "",
        "SequenceNumber": str(seq),
    }
    if event == "room-ended" and record.end is not None:
        params["RoomDuration"] = str(int((record.end - record.created).total_seconds()))
    if participant is not None:
        params.update(
            ParticipantSid=participant.sid,
            ParticipantIdentity=participant.identity,
            ParticipantStatus=participant.status,
        )
        if participant.end is not None:
            duration = int((participant.end - participant.start).total_seconds())
            params["ParticipantDuration"] = str(duration)
    if track is not None:
        params.update(TrackSid=track.sid, TrackKind=track.kind, TrackName=track.name)
    return params


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is tried again (no I/O: ``delay`` takes the random source)."""

    max_attempts: int = MAX_ATTEMPTS
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    max_seconds: float = MAX_EVENT_SECONDS

    @staticmethod
    def retryable(status: int | None) -> bool:
        """``None``: a timeout or connection error."""
        return status is None or status == 429 or status >= 500

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), full jitter."""
        return rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))

    def next_delay(self, attempt: int, elapsed: float, rng: random.Random) -> float | None:
        """The wait before another attempt, or None when the event is to be given up."""
        if attempt >= self.max_attempts:
            return None
        wait = self.delay(attempt, rng)
        return None if elapsed + wait > self.max_seconds else wait


def callback_key(url: str, params: Mapping[str, str]) -> str:
    """What orders deliveries: a room's callbacks (rooms, recordings) go one after another."""
    return params.get("RoomSid") or params.get("CompositionSid") or url


class StatusCallbacks:
    """Queues and delivers status callbacks (owns the ``twilio-callbacks-*`` tasks)."""

    def __init__(
        self,
        auth_token: str | None,
        *,
        policy: RetryPolicy | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        queue_size: int = ROOM_QUEUE_SIZE,
    ) -> None:
        self.auth_token = auth_token
        self.policy = policy if policy is not None else RetryPolicy()
        self.request_timeout = request_timeout
        self.queue_size = queue_size
        self._queues: dict[str, deque[tuple[str, str, dict[str, str]]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: next SequenceNumber per room, for the newest ``SEQUENCE_ROOMS`` rooms
        self._seq: OrderedDict[str, int] = OrderedDict()
        self._http: aiohttp.ClientSession | None = None
        self._rng = random.Random()
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self.retries = 0

    def room_event(
        self,
        record: r.RoomRecord,
        event: str,
        participant: r.ParticipantRecord | None = None,
        track: r.TrackRecord | None = None,
    ) -> None:
        if not record.status_callback:
            return
        params = event_params(record, event, self.next_sequence(record.sid), participant, track)
        self.send(record.status_callback, record.status_callback_method, params)

    def next_sequence(self, room_sid: str) -> int:
        """The room's next ``SequenceNumber`` (room and recording events share it)."""
        seq = self._seq.pop(room_sid, 0)
        self._seq[room_sid] = seq + 1  # (re)inserted last: the oldest room is dropped first
        while len(self._seq) > SEQUENCE_ROOMS:
            self._seq.popitem(last=False)
        return seq

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def send(self, url: str, method: str, params: dict[str, str]) -> None:
        """Queue one signed callback (any event: rooms, recordings, compositions)."""
        key = callback_key(url, params)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque(maxlen=self.queue_size)
        if len(queue) == queue.maxlen:
            self.dropped += 1
            metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("dropped").inc()
            log.warning("status callbacks for %s: queue full, the oldest dropped", key[:40])
        queue.append((url, method, params))
        if key not in self._tasks:
            task = asyncio.create_task(self._deliver(key, queue), name=f"twilio-callbacks-{key}")
            self._tasks[key] = task

    async def _deliver(self, key: str, queue: deque[tuple[str, str, dict[str, str]]]) -> None:
        try:
            while queue:
                url, method, params = queue[0]
                await self._deliver_one(url, method, params)
                if queue and queue[0][2] is params:  # (not dropped meanwhile by a full queue)
                    queue.popleft()
        finally:
            self._tasks.pop(key, None)
            if not queue:
                self._queues.pop(key, None)

    async def _deliver_one(self, url: str, method: str, params: dict[str, str]) -> None:
        shown = urlsplit(url)._replace(query="").geturl()
        event = params.get("StatusCallbackEvent", "?")
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            status = await self._attempt(url, method, params, shown)
            if status is not None and status < 400:
                self.delivered += 1
                metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("delivered").inc()
                return
            if not self.policy.retryable(status):
                self.failed += 1
                metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("failed").inc()
                log.warning("status callback %s to %s: HTTP %s, not retried", event, shown, status)
                return
            wait = self.policy.next_delay(attempt, time.monotonic() - started, self._rng)
            if wait is None:
                self.failed += 1
                metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("failed").inc()
                log.warning(
                    "status callback %s to %s: given up after %d attempts", event, shown, attempt
                )
                return
            self.retries += 1
            metrics.ROOM_SERVER_STATUS_CALLBACKS.labels("retried").inc()
            await asyncio.sleep(wait)

    async def _attempt(
        self, url: str, method: str, params: dict[str, str], shown: str
    ) -> int | None:
        """One request: its HTTP status, or None on a timeout or a connection error."""
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=self.request_timeout)
            self._http = aiohttp.ClientSession(timeout=timeout)
        try:
            if method == "GET":
                full = url + ("&" if "?" in url else "?") + urlencode(params)
                async with self._http.get(full, headers=self._headers(full, {})) as resp:
                    return resp.status
            headers = self._headers(url, params)
            async with self._http.post(url, data=params, headers=headers) as resp:
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("status callback to %s: %s", shown, type(exc).__name__)
            return None

    def _headers(self, url: str, params: Mapping[str, str]) -> dict[str, str]:
        if not self.auth_token:
            return {}
        return {"X-Twilio-Signature": signature(self.auth_token, url, params)}

    async def stop(self) -> None:
        if self._tasks:
            await stop_tasks(list(self._tasks.values()), 3.0, log)
        if self._http is not None:
            await self._http.close()
            self._http = None
