"""Lifecycle status: structured log lines and an optional webhook.

States go ``initializing`` → ``started`` → ``ended`` (reason
``max-participant-duration``, ``room-ended`` or ``stopped``) or ``failed``
(reason ``error-loading-extension``, ``error-streaming-media`` or
``internal-error``).  Every report is logged at once; when
``MIXER_STATUS_CALLBACK_URL`` is set it is also POSTed as JSON by a
background task with retries, so a slow or dead callback never delays the
mix.  The queue is bounded (oldest report dropped when full: the newest
state is the one that matters).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import aiohttp

from mixer_ext.log import log_event
from mixer_ext.metrics import RUN_STATE
from mixer_ext.redact import redact_url
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)


class State(StrEnum):
    INITIALIZING = "initializing"
    STARTED = "started"
    ENDED = "ended"
    FAILED = "failed"


class EndReason(StrEnum):
    MAX_PARTICIPANT_DURATION = "max-participant-duration"
    ROOM_ENDED = "room-ended"
    STOPPED = "stopped"


class FailReason(StrEnum):
    ERROR_LOADING_EXTENSION = "error-loading-extension"
    ERROR_STREAMING_MEDIA = "error-streaming-media"
    INTERNAL_ERROR = "internal-error"


#: webhook delivery: attempts per report and the first retry delay (doubles)
CALLBACK_ATTEMPTS = 5
CALLBACK_FIRST_RETRY = 0.5
CALLBACK_TIMEOUT = 5.0
CALLBACK_QUEUE_LIMIT = 32


class StatusReporter:
    """Reports lifecycle states; owns the webhook task (``start``/``aclose``)."""

    def __init__(
        self,
        room: str,
        identity: str,
        callback_url: str | None = None,
        *,
        first_retry: float = CALLBACK_FIRST_RETRY,
    ) -> None:
        self.room = room
        self.identity = identity
        self.callback_url = callback_url
        self.state: State | None = None
        self.reason: str | None = None
        #: sequence number of the last report (a resumed run starts from the earlier one's)
        self.sequence = 0
        #: called with the new sequence number after each report (the run state saves it)
        self.on_report: Callable[[int], None] | None = None
        self._first_retry = first_retry
        self._pending: deque[dict[str, Any]] = deque(maxlen=CALLBACK_QUEUE_LIMIT)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self.callback_url and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._deliver_loop(), name="status-callback"
            )

    def report(self, state: State, reason: str | None = None, detail: str | None = None) -> None:
        """Record a state change: log it now, queue it for the webhook."""
        self.state, self.reason = state, reason
        self.sequence += 1
        if self.on_report is not None:
            self.on_report(self.sequence)
        RUN_STATE.state(state.value)
        body: dict[str, Any] = {
            "state": state.value,
            "reason": reason,
            "room": self.room,
            "identity": self.identity,
            "sequence": self.sequence,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if detail:
            body["detail"] = detail
        level = logging.ERROR if state is State.FAILED else logging.INFO
        log_event(log, "status", level, **{k: v for k, v in body.items() if v is not None})
        if self.callback_url:
            self._pending.append(body)
            self._wakeup.set()

    async def _deliver_loop(self) -> None:
        if not self.callback_url:
            raise RuntimeError("status: no callback URL to deliver to")
        timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                body = self._pending[0]
                await self._post_with_retries(session, body)
                if self._pending and self._pending[0] is body:
                    self._pending.popleft()

    async def _post_with_retries(
        self, session: aiohttp.ClientSession, body: dict[str, Any]
    ) -> None:
        if not self.callback_url:
            raise RuntimeError("status: no callback URL to deliver to")
        delay = self._first_retry
        shown = redact_url(self.callback_url)
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            try:
                async with session.post(self.callback_url, json=body) as resp:
                    if resp.status < 400:
                        return
                    why = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        log.warning("status callback %s refused %s: %s", shown, body["state"], why)
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            log.warning(
                "status callback %s: %s failed (attempt %d/%d): %s",
                shown,
                body["state"],
                attempt,
                CALLBACK_ATTEMPTS,
                why,
            )
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def aclose(self, grace: float = 10.0) -> None:
        """Deliver what is queued (for up to ``grace`` seconds), then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            log.warning("status callback: gave up delivering %d report(s)", len(self._pending))
            await stop_tasks([self._task], logger=log)
        self._task = None
