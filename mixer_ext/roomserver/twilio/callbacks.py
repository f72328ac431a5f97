"""Room status callbacks, signed as Twilio signs webhooks.

Twilio's signature (``X-Twilio-Signature``): base64 of HMAC-SHA1, keyed with the account's
auth token (``MIXER_AUTH_TOKEN``), over the callback URL followed by every POST parameter's
name and value, sorted by name (``twilio.request_validator.RequestValidator`` checks it).
For ``GET`` callbacks the parameters are in the URL and only the URL is signed.

Events: ``room-created``, ``participant-connected``, ``participant-disconnected``,
``track-added``, ``track-removed``, ``room-ended``; parameters as Twilio sends them
(``RoomSid``, ``RoomName``, ``RoomStatus``, ``StatusCallbackEvent``, ``SequenceNumber``,
``ParticipantSid``... ``TrackSid``...).  Delivery: one task (``twilio-callbacks``), a bounded
queue (``QUEUE_SIZE``, drops the oldest: a dead receiver never makes memory grow), 5 s per
request, no retries.  The URL is logged without its query string (it may carry secrets).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

import aiohttp

from mixer_ext.roomserver.twilio import rest as r
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
REQUEST_TIMEOUT = 5.0


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


class StatusCallbacks:
    """Queues and delivers room status callbacks (owns the ``twilio-callbacks`` task)."""

    def __init__(self, auth_token: str | None) -> None:
        self.auth_token = auth_token
        self._queue: asyncio.Queue[tuple[str, str, dict[str, str]]] = asyncio.Queue(QUEUE_SIZE)
        self._seq: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.delivered = 0

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
        seq = self._seq.get(room_sid, 0)
        self._seq[room_sid] = seq + 1
        return seq

    def send(self, url: str, method: str, params: dict[str, str]) -> None:
        """Queue one signed callback (any event: rooms, recordings, compositions)."""
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait((url, method, params))
        if self._task is None:
            self._task = asyncio.create_task(self._deliver(), name="twilio-callbacks")

    async def _deliver(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                url, method, params = await self._queue.get()
                shown = urlsplit(url)._replace(query="").geturl()
                try:
                    if method == "GET":
                        full = url + ("&" if "?" in url else "?") + urlencode(params)
                        headers = self._headers(full, {})
                        async with http.get(full, headers=headers) as resp:
                            status = resp.status
                    else:
                        headers = self._headers(url, params)
                        async with http.post(url, data=params, headers=headers) as resp:
                            status = resp.status
                    self.delivered += 1
                    if status >= 400:
                        log.warning("status callback to %s: HTTP %d", shown, status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("status callback to %s failed: %s", shown, type(exc).__name__)

    def _headers(self, url: str, params: Mapping[str, str]) -> dict[str, str]:
        if not self.auth_token:
            return {}
        return {"X-Twilio-Signature": signature(self.auth_token, url, params)}

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task], 3.0, log)
