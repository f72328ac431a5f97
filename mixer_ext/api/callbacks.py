"""Status callback delivery: from the store's outbox to the user's ``StatusCallback``.

In order per resource (a resource's next callback waits for the one before it), signed
with ``X-Twilio-Signature``, retried with backoff (1 s doubling to 60 s, ``ATTEMPTS``
tries, then dropped with a log line).  Runs as one task beside the API and never blocks
a request: requests only write the outbox and ``wake()`` this task.  Resources are
served concurrently, so one slow callback URL delays only its own resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from urllib.parse import urlencode

import aiohttp
import yarl

from mixer_ext.api.signing import twilio_signature
from mixer_ext.api.store import PendingCallback, Store
from mixer_ext.redact import redact_url

log = logging.getLogger(__name__)

ATTEMPTS = 8
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
TIMEOUT = 10.0


class CallbackDispatcher:
    def __init__(self, store: Store, auth_token: str, user_agent: str = "mixer-ext") -> None:
        self.store = store
        self.auth_token = auth_token
        self.user_agent = user_agent
        self._wakeup = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    self._wakeup.clear()
                    now = time.time()
                    soonest = now + 30.0
                    for cb in self.store.pending_callbacks():
                        if cb.id in self._inflight:
                            continue
                        if cb.next_attempt > now:
                            soonest = min(soonest, cb.next_attempt)
                            continue
                        task = asyncio.create_task(
                            self._deliver(session, cb), name=f"callback-{cb.resource_sid}"
                        )
                        self._inflight[cb.id] = task
                        task.add_done_callback(functools.partial(self._done, cb.id))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), max(0.05, soonest - now))
            finally:
                tasks = list(self._inflight.values())
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, callback_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(callback_id, None)
        self._wakeup.set()

    async def _deliver(self, session: aiohttp.ClientSession, cb: PendingCallback) -> None:
        shown = redact_url(cb.url)
        event = cb.params.get("StatusCallbackEvent")
        headers = {"User-Agent": self.user_agent}
        try:
            if cb.method == "GET":
                url = cb.url + ("&" if "?" in cb.url else "?") + urlencode(cb.params)
                headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, url, None)
                # sent byte for byte as signed (yarl would re-quote it otherwise)
                request = session.get(yarl.URL(url, encoded=True), headers=headers)
            else:
                headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, cb.url, cb.params)
                request = session.post(cb.url, data=cb.params, headers=headers)
            async with request as resp:
                if resp.status < 400:
                    self.store.callback_done(cb.id)
                    return
                why = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        attempt = cb.attempts + 1
        if attempt >= ATTEMPTS:
            log.warning(
                "callback %s %s to %s dropped after %d tries: %s",
                cb.resource_sid,
                event,
                shown,
                attempt,
                why,
            )
            self.store.callback_done(cb.id)
            return
        delay = min(FIRST_RETRY * 2 ** (attempt - 1), MAX_RETRY)
        log.warning(
            "callback %s %s to %s failed (try %d/%d, again in %.0f s): %s",
            cb.resource_sid,
            event,
            shown,
            attempt,
            ATTEMPTS,
            delay,
            why,
        )
        self.store.callback_retry(cb.id, time.time() + delay)
