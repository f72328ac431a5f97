"""Per-track recordings: a published track's Opus payloads into Matroska audio, as they arrive.

What a recording is (as Twilio's were): one ``.mka`` file per published audio track, the
Opus payloads exactly as the publisher sent them (no decode, no re-encode), each stamped
with its time on the track's own timeline, plus the track's **offset** from the room's
start (so the recordings of one room line up: ``compose/`` aligns them by it).

Timing (``RecordingTimeline``, sans-I/O): the first payload is time 0.  Later payloads are
placed by their RTP timestamp (48 kHz, unwrapped across 2**32) from the first one, so DTX,
mute and loss stay gaps of the right length in the file, not squeezed out.  Where the
publisher's clock stopped while the wall clock went on (a sender that paused its
timestamps, a new SSRC after a renegotiation), a payload arriving more than
``REANCHOR_SECONDS`` later than its timestamp says is placed by its arrival instead, so
the gap is still kept as time.  A payload at or before the previous one's time (a late
reordered or duplicated packet) is dropped: a Matroska track's timestamps only rise.

Writing (``TrackRecorder``): the loop only stamps a payload and appends it to a bounded
queue (``QUEUE_PACKETS``, 10 s of 20 ms packets: a ``deque``, no lock, no wake-up); one
writer thread per recording wakes every ``BATCH_SECONDS`` and muxes what came.  **Drop
policy**: when the queue is full (the disk is that slow) the newest payload is dropped and
counted (``dropped``): the loop never waits, other tracks' media never waits, and what was
already queued is written in order (the dropped time stays a gap).

Crash safety: the muxer runs with ``live=1`` (no index or sizes to fix at the end: a
truncated file is a valid one), a cluster at least every ``CLUSTER_MS`` and
``flush_packets`` so each finished cluster is in the kernel's hands at once: a process
killed at any moment (SIGKILL, OOM) leaves a file that decodes up to about its last
1.5 s (the open cluster and the batch not yet written).  Matroska's timestamps are in
milliseconds (its default timestamp scale): exact for 20 ms frames.
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
#: how late (seconds) a payload may arrive against its RTP timestamp before it is placed
#: by its arrival (the publisher's clock stopped, the wall clock did not)
REANCHOR_SECONDS = 1.0
#: the writer's queue: 10 s of 20 ms packets; beyond, the newest payload is dropped
QUEUE_PACKETS = 500
#: the writer thread wakes this often and writes what came meanwhile (one wake-up per
#: batch, not per payload: with 50 tracks, per-payload wake-ups cost 70 us each)
BATCH_SECONDS = 0.5
#: a Matroska cluster (the unit that reaches the file) at least this often
CLUSTER_MS = 1000
MKA_OPTIONS = {
    "live": "1",  # no seek head, no cues, unknown sizes: nothing to rewrite at the end
    "cluster_time_limit": str(CLUSTER_MS),
    "flush_packets": "1",
}
_RTP_RANGE = 1 << 32
_HALF_RTP_RANGE = 1 << 31
_MS = Fraction(1, 1000)


def opus_head(channels: int = 2, pre_skip: int = 0) -> bytes:
    """The Opus ``CodecPrivate`` (RFC 7845 5.1 ID header), channel mapping family 0.

    RTP Opus carries no header; the stream is declared stereo as its SDP says
    (``opus/48000/2``: libopus decodes mono payloads into it), with no pre-skip (the
    first payload is the track's time 0, whatever the sender's encoder delay was).
    """
    if channels not in (1, 2):
        raise ValueError(f"Opus channels must be 1 or 2, got {channels}")
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, OPUS_RATE, 0, 0)


class RecordingTimeline:
    """Places payloads on a track's timeline (48 kHz samples from its first payload).

    ``place(rtp_timestamp, arrival)`` returns the payload's time in samples, or ``None``
    when it must be dropped (at or before the previous one).  ``arrival`` is in seconds on
    any monotonic clock.  No I/O: tested with made-up timestamps.
    """

    def __init__(self) -> None:
        self._anchor_ts: int | None = None  # unwrapped RTP timestamp at the anchor
        self._anchor_pts = 0  # and its time on the timeline
        self._anchor_arrival = 0.0
        self._last_raw = 0
        self._unwrapped = 0
        self._last_pts = -1
        self.first_arrival: float | None = None
        #: payloads placed by arrival because the sender's clock stood still or jumped
        self.reanchored = 0
        #: payloads dropped as late (reordered) or duplicated
        self.late = 0

    @property
    def last_pts(self) -> int:
        """The time of the last payload placed (-1 before the first)."""
        return self._last_pts

    def place(self, rtp_timestamp: int, arrival: float) -> int | None:
        raw = rtp_timestamp % _RTP_RANGE
        if self._anchor_ts is None:
            self._anchor_ts = self._unwrapped = self._last_raw = raw
            self._anchor_arrival = arrival
            self.first_arrival = arrival
            self._last_pts = 0
            return 0
        delta = (raw - self._last_raw) % _RTP_RANGE
        if delta >= _HALF_RTP_RANGE:
            delta -= _RTP_RANGE  # behind the last one
        self._last_raw = raw
        self._unwrapped += delta
        pts = self._anchor_pts + self._unwrapped - self._anchor_ts
        by_arrival = self._anchor_pts + round((arrival - self._anchor_arrival) * OPUS_RATE)
        if by_arrival - pts > REANCHOR_SECONDS * OPUS_RATE or pts < self._last_pts - (
            REANCHOR_SECONDS * OPUS_RATE
        ):
            # the sender's clock stood still (or was reset) while time went on
            self.reanchored += 1
            pts = max(by_arrival, self._last_pts + 1)
            self._anchor_ts = self._unwrapped
            self._anchor_pts = pts
            self._anchor_arrival = arrival
        if pts <= self._last_pts:
            self.late += 1
            return None
        self._last_pts = pts
        return pts


@dataclass
class RecordingResult:
    """What a finished (or failed) recording left: for the Recording resource."""

    path: Path
    #: samples at 48 kHz from the first payload to the end of the last one (0: nothing)
    duration_samples: int
    size: int
    packets: int
    dropped: int
    error: str | None = None

    @property
    def duration(self) -> float:
        return self.duration_samples / OPUS_RATE


@dataclass
class RecordingTags:
    """Written into the file's tags, so a recording says where it belongs on its own."""

    room_sid: str = ""
    track_name: str = ""
    participant: str = ""
    #: milliseconds from the room's start to the track's first payload
    offset_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, str]:
        return {
            "ROOM_SID": self.room_sid,
            "TRACK_NAME": self.track_name,
            "PARTICIPANT": self.participant,
            "OFFSET_MS": str(self.offset_ms),
            **self.extra,
        }


def read_tags(path: Path) -> dict[str, str]:
    """The tags ``TrackRecorder`` wrote (upper-case keys), from the file alone."""
    with av.open(str(path)) as container:
        return {k.upper(): v for k, v in container.metadata.items()}


def scan_recording(path: Path) -> tuple[dict[str, str], int]:
    """A recording's tags and its duration in samples (the end of its last payload), from
    the file alone: what a restarted server knows of a recording it did not finish.

    Reads every packet header (no decode): about 0.1 s for an hour.  A truncated end
    (a killed writer) ends the scan where the file does.
    """
    end = 0
    with av.open(str(path)) as container:
        tags = {k.upper(): v for k, v in container.metadata.items()}
        stream = container.streams.audio[0]
        scale = Fraction(stream.time_base or _MS) * OPUS_RATE
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                end = max(end, int(packet.pts * scale) + _frame_samples(bytes(packet)[:2]))
        except (av.error.InvalidDataError, av.error.EOFError):
            pass
    return tags, end


class TrackRecorder:
    """One track's recording: ``push`` on the loop, muxing in its own writer thread.

    ``clock`` gives seconds on the same monotonic clock as ``room_start`` (the room's
    start: the track's offset is measured from it).  ``on_done(result)`` is called in the
    writer thread when the file is closed (use ``loop.call_soon_threadsafe`` to get back
    to the loop).  ``close()`` returns at once; ``join()`` (blocking) waits for the file.
    """

    def __init__(
        self,
        path: Path,
        tags: RecordingTags,
        *,
        room_start: float,
        clock: Callable[[], float],
        on_done: Callable[[RecordingResult], None] | None = None,
        queue_packets: int = QUEUE_PACKETS,
    ) -> None:
        self.path = path
        self.tags = tags
        self.room_start = room_start
        self._clock = clock
        self._on_done = on_done
        self.timeline = RecordingTimeline()
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._queue_packets = queue_packets
        self._stop = threading.Event()
        self.dropped = 0
        self.packets = 0
        self._closed = False
        self._last_frame_samples = 960
        self.result: RecordingResult | None = None
        self._thread = threading.Thread(target=self._run, name=f"recorder {path.name}", daemon=True)
        self._thread.start()

    @property
    def offset_ms(self) -> int | None:
        """Milliseconds from the room's start to the first payload (None before it)."""
        first = self.timeline.first_arrival
        return None if first is None else max(0, round((first - self.room_start) * 1000))

    def push(self, payload: bytes, rtp_timestamp: int) -> None:
        """One RTP payload (Opus) as it arrived; returns at once (see the drop policy)."""
        if self._closed or not payload:
            return
        pts = self.timeline.place(rtp_timestamp, self._clock())
        if pts is None:
            return
        if pts == 0:
            offset = self.offset_ms
            self.tags.offset_ms = offset if offset is not None else 0
        if len(self._queue) < self._queue_packets:
            self._queue.append((pts, payload))  # deque.append: atomic, no lock, no wake-up
        else:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 500 == 0:
                log.warning(
                    "recorder: %s: disk too slow, %d payloads dropped", self.path.name, self.dropped
                )

    def close(self) -> None:
        """No more payloads: the writer finishes what is queued and closes the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()

    def join(self, timeout: float | None = None) -> RecordingResult | None:
        self._thread.join(timeout)
        return self.result

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        container: Any = None
        stream: Any = None
        last_end = 0
        error: str | None = None
        packets = 0
        try:
            while True:
                stopping = self._stop.wait(BATCH_SECONDS)  # wakes at once on close()
                while self._queue:
                    pts, payload = self._queue.popleft()
                    if container is None:
                        container, stream = self._open()
                    packet = av.Packet(payload)
                    packet.pts = packet.dts = pts * 1000 // OPUS_RATE
                    packet.time_base = _MS
                    packet.stream = stream
                    container.mux(packet)
                    packets += 1
                    last_end = pts + _frame_samples(payload)
                if stopping:
                    break
        except Exception as exc:  # the writer's top level: a broken disk fails this recording only
            error = f"{type(exc).__name__}: {exc}"
            log.warning("recorder: %s failed: %s", self.path.name, error)
            self._closed = True  # later payloads are not even queued
            self._queue.clear()
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception as exc:  # same top level: report, never raise in a thread
                    error = error or f"{type(exc).__name__}: {exc}"
        size = self.path.stat().st_size if self.path.exists() else 0
        self.packets = packets
        self.result = RecordingResult(self.path, last_end, size, packets, self.dropped, error)
        if self._on_done is not None:
            self._on_done(self.result)

    def _open(self) -> tuple[Any, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container: Any = av.open(str(self.path), "w", format="matroska", options=MKA_OPTIONS)
        container.metadata.update(self.tags.as_metadata())
        stream = container.add_stream("opus", rate=OPUS_RATE)
        stream.codec_context.layout = "stereo"
        stream.codec_context.extradata = opus_head(2)
        stream.time_base = _MS
        return container, stream


def _frame_samples(payload: bytes) -> int:
    """Samples (48 kHz) in one Opus packet, from its TOC (RFC 6716 3.1); 960 if unsure."""
    toc = payload[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        per_frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        per_frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        per_frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = payload[1] & 0x3F if len(payload) > 1 else 1
    return per_frame * max(frames, 1)
