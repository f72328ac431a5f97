"""Data-track forwarding core (``roomserver.datatracks``), no I/O: the rate limit, the
bounded queue that drops the oldest, and the channel drain stopping at its high water mark
(the channel is a stand-in with aiortc's ``RTCDataChannel`` attributes: a unit test)."""

from __future__ import annotations

from typing import Any

from mixer_ext.roomserver.datatracks import (
    HIGH_WATER,
    MAX_MESSAGE_BYTES,
    ChannelOptions,
    ChannelSink,
    DataFanout,
    Message,
    OutQueue,
)
from mixer_ext.roomserver.limits import TokenBucket


class ListSink:
    def __init__(self) -> None:
        self.queue = OutQueue()
        self.got: list[Message] = []

    def deliver(self, message: Message) -> None:
        self.got.append(message)


class FakeChannel:
    """What ChannelSink uses of aiortc's RTCDataChannel; sending buffers until ``flush``."""

    def __init__(self) -> None:
        self.readyState = "connecting"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[Message] = []
        self.handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def send(self, message: Message) -> None:
        self.sent.append(message)
        self.bufferedAmount += len(message)

    def flush(self) -> None:
        self.bufferedAmount = 0
        self.handlers["bufferedamountlow"]()

    def close(self) -> None:
        self.readyState = "closed"


def test_out_queue_drops_the_oldest() -> None:
    q = OutQueue(size=3)
    for m in ["a", "b", "c", "d", "e"]:
        q.push(m)
    assert q.dropped == 2
    assert [q.pop(), q.pop(), q.pop(), q.pop()] == ["c", "d", "e", None]


def test_fanout_rate_limits_the_publisher_alone() -> None:
    bucket = TokenBucket(10.0, 5, now=0.0)
    fanout = DataFanout("room/alice/MT1", bucket)
    one, two = ListSink(), ListSink()
    fanout.sinks.update({"PA1": one, "PA2": two})
    accepted = [fanout.accept(f"m{i}", 0.0) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert one.got == two.got == [f"m{i}" for i in range(5)]
    assert fanout.accept("later", 0.1)  # one token back after 0.1 s at 10/s
    assert not fanout.accept(b"x" * (MAX_MESSAGE_BYTES + 1), 10.0)
    assert fanout.limited == 4 and fanout.forwarded == 6


def test_sink_waits_for_open_and_stops_at_high_water() -> None:
    sink = ChannelSink(ChannelOptions(ordered=False, max_retransmits=2))
    channel = FakeChannel()
    sink.deliver("early")  # before the server's offer made its channel
    sink.open(channel)
    assert channel.sent == []
    channel.readyState = "open"
    channel.handlers["open"]()
    assert channel.sent == ["early"]
    big = "x" * (HIGH_WATER // 4)
    for _ in range(10):
        sink.deliver(big)
    # 4 fit under the high water mark (with "early"), the rest wait in the bounded queue
    assert len(channel.sent) == 1 + 4 and len(sink.queue) == 6
    channel.flush()
    assert len(channel.sent) == 1 + 8 and len(sink.queue) == 2
    sink.stop()
    assert channel.readyState == "closed" and sink.readyState == "ended"
