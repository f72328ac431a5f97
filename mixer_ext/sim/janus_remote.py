"""Many talkers in a Janus VideoRoom for the price of a UDP socket: remote publishers.

Janus' VideoRoom (1.1 and later) can host *remote publishers*: ``add_remote_publisher``
registers a publisher whose media arrives as plain RTP on a port Janus opens, the
way a second Janus relays a room to it (``publish_remotely``).  To everyone in the
room it is a publisher like any other: it is announced, it can be subscribed to
over WebRTC, and Janus forwards its packets (SRTP towards each subscriber).  This
is real Janus behaviour, documented with the VideoRoom plugin.

For a benchmark it means N talkers cost one socket and one pacing task: no ICE,
no DTLS, no SRTP and no aiortc sender per talker, so the load generator is not
what limits how many participants a receiver is measured with.  Each talker
replays an ``OpusLoop`` (``mixer_ext.sim.preencoded``: encoded once), 20 ms a
packet, paced from one fixed start and spread over the 20 ms so the packets do
not arrive in one burst.

Janus tells the streams of a remote publisher apart by SSRC: stream ``mindex``
is ``1000 + 10 * mindex`` (its ``REMOTE_PUBLISHER_BASE_SSRC`` and ``_STEP``), so
the one audio stream of a talker (mindex 0) is sent with SSRC 1000.

Adds go one request at a time, whoever calls ``add`` concurrently.  Janus 1.1.2
(Debian) puts each new remote publisher into the room's participant table from
that publisher's own thread *without the room's lock* (fixed upstream in 1.3.0,
commit dadc2abd).  Asked for many at once, its threads insert concurrently, and
a notification loop over the table stops halfway (``GLib-CRITICAL ...
g_hash_table_iter_next`` in Janus' log: a participant is never told of a
publisher); two inserts at once can also corrupt the table itself.  One at a
time costs a round trip each (about 1-5 ms here), which is still a burst to
the room: 97 in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass

from mixer_ext.connectors.janus import parse_room_id
from mixer_ext.connectors.janus_session import JanusSession
from mixer_ext.sim.preencoded import FRAME_SAMPLES, PTIME, OpusLoop
from mixer_ext.tasks import stop_tasks

#: the SSRC Janus expects for a remote publisher's stream with mindex 0
REMOTE_AUDIO_SSRC = 1000
#: the payload type Janus' VideoRoom uses for Opus
OPUS_PT = 111
_HEADER = struct.Struct("!BBHII")
#: a silent (DTX) talker sends one comfort-noise frame every this many 20 ms frames
#: (400 ms), as libopus with DTX on does
DTX_INTERVAL_FRAMES = 20


@dataclass
class _Talker:
    display: str
    feed_id: int
    address: tuple[str, int]
    loop: OpusLoop
    dtx: bool = False
    seq: int = 0
    n: int = 0


class RemotePublishers:
    """Remote publishers in one room, added through one Janus session, fed from one socket."""

    def __init__(
        self, url: str, room: str | int, secret: str, *, api_secret: str | None = None
    ) -> None:
        self.room = parse_room_id(str(room))
        self.secret = secret
        self.session = JanusSession(url, api_secret=api_secret, name="remote-publishers")
        self.handle: int | None = None
        self.talkers: list[_Talker] = []
        self.sent_packets = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._pacer: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        #: one add_remote_publisher in flight at a time (see the module docstring)
        self._adding = asyncio.Lock()

    async def open(self) -> None:
        await self.session.open()
        self.handle = await self.session.attach("janus.plugin.videoroom")
        # events are of no interest, but a full event queue closes the session: drain it
        self._drain = asyncio.create_task(self._drain_events(), name="remote-publishers-events")

    async def _drain_events(self) -> None:
        while await self.session.next_event() is not None:
            pass

    async def add(self, display: str, loop: OpusLoop, iface: str, *, dtx: bool = False) -> int:
        """Announce a remote publisher ``display`` in the room; its media starts with ``start``.

        ``dtx``: the talker is silent the way a WebRTC sender with Opus DTX is: the loop's
        DTX frame every ``DTX_INTERVAL_FRAMES`` frames, nothing in between (RTP timestamps
        advance, sequence numbers do not).
        """
        if self.handle is None:
            raise RuntimeError("remote publishers: open() first")
        stream = {"type": "audio", "mindex": 0, "mid": "0", "codec": "opus"}
        if loop.channels == 2:
            stream["stereo"] = True
        async with self._adding:
            data, _ = await self.session.message(
                self.handle,
                {
                    "request": "add_remote_publisher",
                    "room": self.room,
                    "secret": self.secret,
                    "display": display,
                    "iface": iface,
                    "streams": [stream],
                },
            )
        feed, ip, port = data.get("id"), data.get("ip"), data.get("port")
        if not isinstance(feed, int) or not isinstance(port, int):
            raise RuntimeError(f"janus: add_remote_publisher answered {data}")
        self.talkers.append(_Talker(display, feed, (str(ip or iface), port), loop, dtx))
        return feed

    def start(self) -> None:
        """Start sending every talker's packets (one task)."""
        if self._pacer is None:
            self._pacer = asyncio.create_task(self._pace(), name="remote-publishers-pacer")

    async def _pace(self) -> None:
        slots = 4  # the talkers are spread over 4 slots of 5 ms
        start = time.monotonic()
        tick = 0
        while True:
            for slot in range(slots):
                due = start + tick * PTIME + slot * PTIME / slots
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for talker in self.talkers[slot::slots]:
                    self._send(talker)
            tick += 1

    def _send(self, talker: _Talker) -> None:
        if talker.dtx:
            if talker.n % DTX_INTERVAL_FRAMES:
                talker.n += 1
                return
            payload = talker.loop.silence
        else:
            payloads = talker.loop.payloads
            payload = payloads[talker.n % len(payloads)]
        header = _HEADER.pack(
            0x80, OPUS_PT, talker.seq, talker.n * FRAME_SAMPLES, REMOTE_AUDIO_SSRC
        )
        talker.seq = (talker.seq + 1) & 0xFFFF
        talker.n += 1
        with contextlib.suppress(BlockingIOError):  # a full socket buffer: that packet is lost
            self._sock.sendto(header + payload, talker.address)
            self.sent_packets += 1

    async def close(self) -> None:
        """Stop sending, remove every remote publisher, close the session."""
        if self._pacer is not None:
            await stop_tasks([self._pacer])
            self._pacer = None
        if self.handle is not None and not self.session.closed.is_set():
            for talker in self.talkers:
                with contextlib.suppress(Exception):
                    await self.session.message(
                        self.handle,
                        {
                            "request": "remove_remote_publisher",
                            "room": self.room,
                            "secret": self.secret,
                            "id": talker.feed_id,
                        },
                        within=5,
                    )
            self.handle = None
        self.talkers.clear()
        self._sock.close()
        await self.session.close()
        if self._drain is not None:
            await stop_tasks([self._drain])
            self._drain = None
