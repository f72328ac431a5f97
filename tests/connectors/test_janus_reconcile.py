"""The rules that find publishers Janus never announced (``janus_reconcile``, sans-I/O).

No Janus here: the listings are what ``listparticipants`` returns, and one
announcement is dropped deliberately by leaving its feed out of ``known`` (what a
lost ``publishers`` event leaves the connector with).  The connector against a real
Janus is in ``tests/connectors/test_janus.py``.
"""

from __future__ import annotations

from mixer_ext.connectors.janus_reconcile import (
    ListedPublisher,
    PublisherReconciler,
    publishers_from_streams,
)

BOT = "audio-mixer-v1"


def listing(*feeds: int, bot: int = 1) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [{"id": bot, "display": BOT, "publisher": False}]
    out += [{"id": f, "display": f"p{f}", "publisher": True} for f in feeds]
    return out


def test_a_dropped_announcement_is_reported_after_the_grace_and_only_then() -> None:
    rec = PublisherReconciler(ignore_display=BOT, own_id=1, grace=1.0)
    # 20 publishers listed; the announcement of 13 was dropped (deliberately, here)
    known = {f for f in range(10, 30) if f != 13}
    assert rec.observe(listing(*range(10, 30)), known, now=100.0) == []
    assert rec.pending  # 13 is a candidate: a later listing must confirm it
    assert rec.observe(listing(*range(10, 30)), known, now=100.5) == []  # within the grace
    assert rec.observe(listing(*range(10, 30)), known, now=101.0) == [ListedPublisher(13, "p13")]
    rec.repaired([13])
    assert not rec.pending


def test_an_announcement_arriving_within_the_grace_is_not_a_loss() -> None:
    rec = PublisherReconciler(ignore_display=BOT, own_id=1, grace=1.0)
    assert rec.observe(listing(10, 11), {10}, now=0.0) == []
    # 11's event arrived meanwhile: nothing to repair, nothing pending
    assert rec.observe(listing(10, 11), {10, 11}, now=2.0) == []
    assert not rec.pending
    # a candidate that left (no longer listed) is forgotten too
    assert rec.observe(listing(10, 12), {10}, now=3.0) == []
    assert rec.observe(listing(10), {10}, now=5.0) == []
    assert not rec.pending


def test_the_bot_non_publishers_and_junk_are_never_reported() -> None:
    rec = PublisherReconciler(ignore_display=BOT, own_id=1, grace=0.0)
    entries: list[object] = [
        {"id": 1, "display": "someone", "publisher": True},  # the bot's own feed id
        {"id": 2, "display": BOT, "publisher": True},  # someone using the bot's identity
        {"id": 3, "display": "attendee", "publisher": False},  # joined, not publishing
        {"id": True, "publisher": True},  # not a feed id
        "junk",
        {"id": "s-7", "publisher": True},  # string ids, no display
    ]
    assert rec.observe(entries, set(), now=0.0) == [ListedPublisher("s-7", None)]
    assert rec.observe("not a list", set(), now=1.0) == []


def test_streams_become_the_publishers_event_janus_did_not_send() -> None:
    attached = [
        {"type": "audio", "mid": "0", "feed_id": 13, "feed_mid": "a0", "feed_display": "x"},
        {"type": "video", "mid": "1", "feed_id": 13, "feed_mid": "v1"},
        {"type": "audio", "mid": "2", "feed_id": 99, "feed_mid": "0"},  # not asked for
        {"type": "audio", "feed_id": 14},  # no feed_mid
        "junk",
    ]
    assert publishers_from_streams(attached, {13: "p13", 14: None}) == [
        {
            "id": 13,
            "display": "p13",
            "streams": [{"type": "audio", "mid": "a0"}, {"type": "video", "mid": "v1"}],
        }
    ]
    assert publishers_from_streams(None, {13: "p13"}) == []
