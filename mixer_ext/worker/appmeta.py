"""App timed metadata, the worker's side: fetch what apps posted, hand it to the mixer.

A worker launched by ``mixer-ext api`` reports its status to
``…/internal/workers/ZX…/status?key=K`` (``MIXER_STATUS_CALLBACK_URL``, from the
environment or the Job's Secret: never argv).  Beside it, ``…/metadata?key=K`` answers a
long poll with the strings apps posted to ``POST /v1/PlayerStreamers/{Sid}/TimedMetadata``
(``mixer_ext/api/timedmeta.py``).  The worker asks, so the API never needs a way into
the worker (a local worker listens on no port; a pod is reached only for its HLS), and
the key is the one the worker already holds.  Logs show the URL redacted.

Each string goes to ``Mixer.post_app_metadata``: stamped with the stream time it
arrived at and carried like the mixer's own payloads (mixer clock -> encoder fan-out ->
HLS ID3 / RTMP onTextData / .ts recording).  A worker not launched by the API (its
status URL is not the API's, or unset) polls nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp

from mixer_ext.redact import redact_url
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: seconds a poll asks the API to wait for something (its answer comes at once otherwise)
POLL_WAIT = 20.0
#: retry delays after a failed poll (doubles up to the maximum)
RETRY_FIRST = 0.5
RETRY_MAX = 10.0

_STATUS_PATH = re.compile(r"^(?P<base>.*/internal/workers/ZX[0-9a-fA-F]{32})/status$")


def metadata_url(status_callback_url: str | None) -> str | None:
    """The API's metadata channel beside a worker's status URL; None when it is not one."""
    if not status_callback_url:
        return None
    path, sep, query = status_callback_url.partition("?")
    match = _STATUS_PATH.match(path)
    if match is None:
        return None
    return match["base"] + "/metadata" + sep + query


class AppMetadataPoller:
    """Long-polls ``url`` and calls ``deliver(text)`` for each app string, in order.

    ``deliver`` returns False when the mixer refused the string (its inbox is full:
    logged, dropped).  Owns one task (``app-metadata-poll``): ``start()``, ``aclose()``.
    """

    def __init__(
        self,
        url: str,
        deliver: Callable[[str], bool],
        *,
        wait: float = POLL_WAIT,
        first_retry: float = RETRY_FIRST,
    ) -> None:
        self.url = url
        self.deliver = deliver
        self.wait = wait
        self.first_retry = first_retry
        #: the last sequence number handed to the mixer (acknowledged on the next poll),
        #: in the API's queue ``queue`` (a restarted API numbers a new queue from 1)
        self.after = 0
        self.queue: str | None = None
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="app-metadata-poll"
            )

    async def aclose(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task], logger=log)
            self._task = None

    async def _run(self) -> None:
        shown = redact_url(self.url)
        delay = self.first_retry
        failing = False
        timeout = aiohttp.ClientTimeout(total=self.wait + 10.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    params = {"after": str(self.after), "wait": str(self.wait)}
                    if self.queue is not None:
                        params["queue"] = self.queue
                    async with http.get(self.url, params=params) as resp:
                        if resp.status == 410:
                            log.info("app metadata: the API says the processor is finished")
                            return
                        if resp.status != 200:
                            raise ValueError(f"HTTP {resp.status}")
                        body: Any = await resp.json()
                    items = body["items"]
                    if not isinstance(items, list):
                        raise ValueError("no list of items")
                    queue = body.get("queue")
                    if items and queue != self.queue:  # a new queue: its numbers start anew
                        self.queue, self.after = str(queue), 0
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
                    if not failing:
                        log.warning("app metadata: polling %s failed: %s", shown, exc)
                    failing = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                if failing:
                    log.info("app metadata: polling %s again", shown)
                failing, delay = False, self.first_retry
                self._take(items)

    def _take(self, items: list[Any]) -> None:
        for item in items:
            try:
                seq, text = int(item["seq"]), item["metadata"]
                if not isinstance(text, str):
                    raise ValueError("metadata is not a string")
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("app metadata: dropping a malformed item: %s", exc)
                continue
            if seq <= self.after:
                continue  # seen already (a repeated answer)
            self.after = seq
            try:
                accepted = self.deliver(text)
            except ValueError as exc:  # over the size limit: the API refuses those first
                log.warning("app metadata %d dropped: %s", seq, exc)
                continue
            if accepted:
                self.delivered += 1
            else:
                log.warning("app metadata %d dropped: the mixer's inbox is full", seq)
