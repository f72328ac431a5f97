"""An app's timed metadata on its way to a running worker: no I/O here.

``POST /v1/PlayerStreamers/{Sid}/TimedMetadata`` (``Metadata`` = the app's string)
queues the string for the worker of the streamer's running MediaProcessor; that worker
fetches it with a long poll on the API's internal worker channel
(``GET /internal/workers/ZX…/metadata?key=…&after=SEQ``), beside the status reports it
already posts there.  The worker reaches the API (locally and from a Kubernetes pod),
the API never has to reach the worker, and no new credential is handed out: the key is
the per-processor HMAC of the status URL.

``AppMetadataQueue`` is one processor's queue: each string gets a sequence number from
1; the worker acknowledges with ``after`` (every item up to it is dropped) and is given
the rest, in order.  Each queue has a random ``id``, sent with every answer and back
with every poll: a worker's ``after`` counts only against the queue it came from, so
after an API restart (a new queue, numbered from 1 again) nothing is skipped.  Delivery
is at least once (a worker that restarts may see an unacknowledged item again).
Bounded: ``MAX_PENDING`` strings wait at most; one more is refused (the app gets a 429
and may retry), never silently dropped.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mixer_ext.api.resources import ApiError, bad_request, format_date, too_many
from mixer_ext.core.payload import MAX_APP_METADATA_BYTES

#: strings waiting for one worker at most (a worker polls continuously: these are the
#: ones posted within one round trip, or while it reconnects)
MAX_PENDING = 32
#: what one poll hands the worker at most
MAX_PER_POLL = 32
#: how long a poll waits for something to arrive (seconds; the worker asks for less)
MAX_WAIT = 25.0


class QueueFull(Exception):
    """``MAX_PENDING`` strings already wait."""


@dataclass(frozen=True)
class AppMetadata:
    seq: int
    text: str


class AppMetadataQueue:
    """One processor's app metadata, from the API to its worker (see module doc)."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        #: tells this queue from an earlier one (an API restart): ``after`` is this queue's
        self.id = secrets.token_hex(8)
        self._items: deque[AppMetadata] = deque()
        self._seq = 0

    def post(self, text: str) -> int:
        """Queue ``text``; returns its sequence number.  Raises ``QueueFull``."""
        if len(self._items) >= self.limit:
            raise QueueFull
        self._seq += 1
        self._items.append(AppMetadata(self._seq, text))
        return self._seq

    def ack(self, after: int) -> None:
        """The worker has everything up to ``after``."""
        while self._items and self._items[0].seq <= after:
            self._items.popleft()

    def pending(self, after: int = 0, limit: int = MAX_PER_POLL) -> list[AppMetadata]:
        return [m for m in self._items if m.seq > after][:limit]

    def __len__(self) -> int:
        return len(self._items)


def parse_timed_metadata(form: Mapping[str, str]) -> str:
    """``Metadata``: required, at most ``MAX_APP_METADATA_BYTES`` bytes of UTF-8."""
    text = form.get("Metadata")
    if text is None or text == "":
        raise bad_request("Metadata is required")
    size = len(str(text).encode("utf-8"))
    if size > MAX_APP_METADATA_BYTES:
        raise bad_request(
            f"Metadata is {size} bytes; at most {MAX_APP_METADATA_BYTES} bytes (UTF-8) are "
            "carried in the stream"
        )
    return str(text)


def not_streaming(streamer_sid: str, why: str) -> ApiError:
    """The streamer has no running processor to carry the metadata."""
    return ApiError(
        409,
        20409,
        f"PlayerStreamer {streamer_sid} {why}: timed metadata needs a running MediaProcessor "
        "streaming to it",
    )


def queue_full(streamer_sid: str) -> ApiError:
    return too_many(
        f"PlayerStreamer {streamer_sid}: {MAX_PENDING} timed metadata are still on their way "
        "to the stream; retry shortly"
    )


def render_timed_metadata(
    streamer_sid: str, account_sid: str, text: str, public_url: str, now: float
) -> dict[str, Any]:
    """The answer to a POST (this product's shape: the hosted one was never published)."""
    return {
        "account_sid": account_sid,
        "player_streamer_sid": streamer_sid,
        "metadata": text,
        "date_created": format_date(now),
        "url": f"{public_url.rstrip('/')}/v1/PlayerStreamers/{streamer_sid}/TimedMetadata",
    }


def parse_after(query: Mapping[str, str]) -> int:
    try:
        return max(0, int(query.get("after", "0")))
    except ValueError:
        return 0


def parse_wait(query: Mapping[str, str]) -> float:
    try:
        return min(MAX_WAIT, max(0.0, float(query.get("wait", "0"))))
    except ValueError:
        return 0.0
