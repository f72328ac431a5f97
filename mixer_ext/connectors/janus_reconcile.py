"""Publishers Janus lists but never announced to the bot: found and repaired (sans-I/O).

The connector learns of publishers from the VideoRoom's ``publishers`` events.  Janus
can fail to send one: Debian's Janus 1.1.2 adds a *remote* publisher to the room's
participant table without holding the room's lock (``janus_videoroom.c``, the remote
publisher thread; fixed upstream in 1.3.0, commit dadc2abd), so when two are added at
once, the loop that notifies everyone about one of them may stop halfway
(``GLib-CRITICAL ... g_hash_table_iter_next: assertion 'ri->version ==
ri->hash_table->version' failed`` in Janus' log) and a participant (the bot, say)
is never told.  In about one burst of 97 remote publishers in three, one was never
mixed.

So the connector also asks Janus, every ``RECONCILE_INTERVAL`` seconds and shortly
after each burst of joins, for the room's ``listparticipants``, and hands the listing
to ``PublisherReconciler.observe()``.  A publisher in the listing that the connector
does not know is reported once it has been missing for ``RECONCILE_GRACE`` seconds
(two listings apart), so a ``publishers`` event still on its way is not taken for a
lost one.  The connector then learns that publisher's streams (``publishers_from_streams``
turns a subscriber handle's ``attached`` list back into what the lost event would
have said) and handles it exactly as if the event had come.

Only additions are repaired: the listing comes from the same unlocked table, so it can
itself be cut short, and "absent from a listing" never means "left" (departures come
from ``leaving``/``unpublished`` events and the subscriber's own renegotiations).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mixer_ext.connectors.janus_feeds import FeedId, is_feed_id
from mixer_ext.log import log_event

log = logging.getLogger(__name__)

#: seconds between two listings of the room's participants (one small request)
RECONCILE_INTERVAL = 5.0
#: seconds after a coalesced subscribe (a burst of joins) before the next listing
RECONCILE_AFTER_JOINS = 1.5
#: seconds a listed publisher must stay unknown before it is taken as never announced
RECONCILE_GRACE = 1.0


@dataclass(frozen=True)
class ListedPublisher:
    """A publisher Janus lists in the room: its feed id and ``display`` (may be None)."""

    feed_id: FeedId
    display: str | None


class PublisherReconciler:
    """Compares listings of the room with what the connector knows; no I/O, no clock.

    ``observe(listing, known, now)`` takes ``listparticipants``' ``participants``, the
    feed ids the connector has had announced as publishers and the current time, and
    returns the publishers missing for at least ``grace`` seconds.  ``ignore_display``
    is the bot's own identity (the connector never mixes a participant using it) and
    ``own_id`` the bot's feed id.  ``pending`` says whether a later listing is due soon
    to confirm a candidate.
    """

    def __init__(
        self,
        *,
        ignore_display: str,
        own_id: FeedId | None = None,
        grace: float = RECONCILE_GRACE,
    ) -> None:
        self.ignore_display = ignore_display
        self.own_id = own_id
        self.grace = grace
        #: feed -> when it was first listed but unknown
        self._missing_since: dict[FeedId, float] = {}

    @property
    def pending(self) -> bool:
        return bool(self._missing_since)

    def observe(
        self, listing: object, known: Collection[FeedId], now: float
    ) -> list[ListedPublisher]:
        missing: dict[FeedId, ListedPublisher] = {}
        for entry in listing if isinstance(listing, list) else []:
            if not isinstance(entry, dict) or not is_feed_id(entry.get("id")):
                log_event(log, "janus: unusable participant in listing", logging.WARNING)
                continue
            feed_id: FeedId = entry["id"]
            display = entry.get("display")
            if (
                entry.get("publisher") is not True
                or feed_id == self.own_id
                or display == self.ignore_display
                or feed_id in known
            ):
                continue
            missing[feed_id] = ListedPublisher(
                feed_id, display if isinstance(display, str) else None
            )
        # forget candidates that were announced meanwhile or are no longer listed
        self._missing_since = {f: self._missing_since.get(f, now) for f in missing}
        return [p for f, p in missing.items() if now - self._missing_since[f] >= self.grace]

    def repaired(self, feed_ids: Collection[FeedId]) -> None:
        """Those feeds have been handled (announced by the connector itself)."""
        for feed_id in feed_ids:
            self._missing_since.pop(feed_id, None)


def publishers_from_streams(
    streams: object, displays: dict[FeedId, str | None]
) -> list[dict[str, Any]]:
    """A ``publishers`` list (as the lost event would have carried) from ``attached`` streams.

    ``streams`` is a subscriber handle's list after joining with ``{"feed": id}`` for
    each missing publisher: each entry names ``feed_id``, ``feed_mid`` and ``type``.
    Only the feeds in ``displays`` are kept; ``display`` comes from the listing.
    """
    by_feed: dict[FeedId, list[dict[str, Any]]] = {}
    for s in streams if isinstance(streams, list) else []:
        if not isinstance(s, dict):
            continue
        feed, mid, kind = s.get("feed_id"), s.get("feed_mid"), s.get("type")
        if is_feed_id(feed) and feed in displays and isinstance(mid, str) and isinstance(kind, str):
            by_feed.setdefault(feed, []).append({"type": kind, "mid": mid})
    out: list[dict[str, Any]] = []
    for feed, found in by_feed.items():
        pub: dict[str, Any] = {"id": feed, "streams": found}
        if displays[feed]:
            pub["display"] = displays[feed]
        out.append(pub)
    return out
