"""One RTMP/RTMPS publishing session: FLV with AAC and AMF0 ``onTextData``.

Runs inside the RTMP child process (``mixer_ext.outputs.rtmp_child``; see
``mixer_ext.outputs.rtmp`` for why it is a separate process).

* Muxed by PyAV's ``flv`` muxer straight to FFmpeg's RTMP(S) client.  The
  metadata goes through a codec-less data stream as hand-built AMF0 bytes
  (``amf0_on_text_data``); FFmpeg writes them as FLV script-data tags.  Packets
  are written in the order they come, none held back to interleave
  (``FLV_OPTIONS``): audio goes out as it is encoded, and each ``onTextData``
  follows the audio of the window it describes, stamped with that window's end,
  so its timestamp is never behind the audio already sent (issue 26).
* Connection: made on the output thread when the first packet arrives.  When
  it fails or drops (write error), the output is ``reconnecting``: packets
  are dropped and counted (``mixer_output_dropped_packets_total{kind="rtmp"}``)
  until the next attempt, which follows capped exponential backoff
  (``RECONNECT_FIRST_DELAY`` doubling up to ``MIXER_RTMP_RECONNECT_MAX_DELAY``).
  Nothing is queued for a dead connection beyond the bounded hand-off queue
  of ``Output``.  Each connection is a fresh FLV stream whose timestamps
  start at 0 (ingest servers expect that); metadata keeps its offset from
  the audio.  ``mixer_output_reconnects_total{kind="rtmp"}`` counts every
  connection after the first.  A connection longer than 2^24 ms (4 h 39 m)
  crosses FLV's extended-timestamp boundary; FFmpeg writes the extension byte
  and RTMP's extended timestamp (tests/outputs/test_rtmp_boundary.py reads across it).
* Redaction: the stream key (last path segment and query) is registered
  with ``mixer_ext.redact.add_secret`` so every log record passing the
  logging filter is scrubbed of it, even when FFmpeg prints it bare; our own
  messages only ever use ``label`` (``redact_url``).

``status()`` adds ``busy_for``: how long the FFmpeg call in progress
(connect, write, close) has been running, so the parent can tell a stall.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import av

from mixer_ext.core.frames import SAMPLE_RATE, TIME_BASE
from mixer_ext.core.payload import TimedPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.metrics import OUTPUT_RECONNECTS
from mixer_ext.outputs.base import Output, OutputState
from mixer_ext.outputs.carriers import amf0_for
from mixer_ext.redact import add_secret, redact_text, redact_url

log = logging.getLogger(__name__)

#: seconds before the first retry; doubles per failure up to the setting's cap
RECONNECT_FIRST_DELAY = 0.5
#: a live stream has no duration/filesize to patch in at the end; and every packet goes
#: out as it comes (``max_interleave_delta`` 1 µs): left at FFmpeg's 10 s, the muxer
#: held the audio back until the sparse data stream had a packet (the next payload,
#: up to 0.5 s) and sent it in bursts (issue 26)
FLV_OPTIONS = {"flvflags": "no_duration_filesize", "max_interleave_delta": "1"}


def stream_key_parts(url: str) -> list[str]:
    """The secret parts of an RTMP URL: last path segment, query, each query value.

    Also their percent-decoded forms, which is how FFmpeg may print them.
    """
    parts = urlsplit(url)
    segs = [s for s in parts.path.split("/") if s]
    out = []
    if segs:
        out.append(segs[-1])
        if parts.query:
            out.append(f"{segs[-1]}?{parts.query}")
    if parts.query:
        out.append(parts.query)
        out.extend(value for _name, value in parse_qsl(parts.query) if value)
    return sorted({*out, *(unquote(p) for p in out)})


class RtmpSession(Output):
    kind = "rtmp"

    def __init__(
        self,
        url: str,
        params: AacParams,
        max_delay: float,
        first_delay: float = RECONNECT_FIRST_DELAY,
        start_ms: int = 0,
    ) -> None:
        super().__init__(redact_url(url), params)
        #: FLV timestamp (ms) of a connection's first packet: 0, as ingest servers expect;
        #: tests start near the 2^24 ms extended-timestamp boundary (4 h 39 m into a stream)
        self.start_ms = start_ms
        self._url = url
        for secret in stream_key_parts(url):
            add_secret(secret)
        self.max_delay = max_delay
        self.first_delay = min(first_delay, max_delay)
        self._delay = self.first_delay
        self._next_attempt = 0.0
        self._container: Any = None
        self._audio_stream: Any = None
        self._data_stream: Any = None
        self._offset = 0
        self.connections = 0
        #: monotonic start of the FFmpeg call in progress (None: not inside one)
        self._busy_since: float | None = None

    @property
    def connected(self) -> bool:
        return self._container is not None

    def status(self) -> dict[str, Any]:
        out = super().status()
        since = self._busy_since
        out["busy_for"] = 0.0 if since is None else time.monotonic() - since
        out["connections"] = self.connections
        return out

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None

    # ------------------------------------------------------------------ hooks
    def _open(self) -> None:
        # Connecting may take seconds: it happens on the output thread, with backoff.
        self._set_state(OutputState.RECONNECTING)

    def _audio(self, packet: EncodedPacket) -> None:
        if self._container is None and not self._connect(packet.pts):
            self._count_drop()
            return
        try:
            with self._busy():
                self._container.mux(packet.to_av(self._audio_stream, self._offset))
        except (OSError, ValueError) as exc:
            self._lost(exc)
            self._count_drop()
            return
        self._count_bytes(len(packet.data))

    def _metadata(self, payload: TimedPayload) -> None:
        if self._container is None:
            self._count_drop()
            return
        pts = max(0, payload.pts - self._offset)
        packet = av.Packet(amf0_for(payload))
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.stream = self._data_stream
        try:
            with self._busy():
                self._container.mux(packet)
        except (OSError, ValueError) as exc:
            self._lost(exc)
            self._count_drop()
            return
        self._count_bytes(packet.size)

    def _close(self, end_of_stream: bool) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                with self._busy():
                    container.close()
            except (OSError, ValueError) as exc:
                log.warning("output %s: closing: %s", self.label, self._describe(exc))

    def _abandon(self) -> None:
        self._drop_connection()

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return redact_text(text.replace(self._url, self.label))

    # ------------------------------------------------------------------ connection
    def _connect(self, first_pts: int) -> bool:
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        container: Any = None
        try:
            container = av.open(self._url, "w", format="flv", options=FLV_OPTIONS)
            audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            audio.codec_context.extradata = self.params.extradata
            audio.codec_context.bit_rate = self.params.bit_rate
            audio.time_base = TIME_BASE
            data = container.add_data_stream()
            data.time_base = TIME_BASE
            with self._busy():
                container.start_encoding()  # connects, handshakes and publishes
        except (OSError, ValueError) as exc:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
            self._count_error()
            log.warning(
                "output %s: cannot connect (%s); retrying in %.1f s",
                self.label,
                self._describe(exc),
                self._delay,
            )
            self._next_attempt = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, self.max_delay)
            return False
        self._container, self._audio_stream, self._data_stream = container, audio, data
        self._offset = first_pts - self.start_ms * SAMPLE_RATE // 1000
        self._delay = self.first_delay
        self.connections += 1
        if self.connections > 1:
            with self._lock:
                self.reconnects += 1
            OUTPUT_RECONNECTS.labels(self.kind).inc()
        self._set_state(OutputState.RUNNING)
        log.info("output %s: connected (connection %d)", self.label, self.connections)
        return True

    def _lost(self, exc: BaseException) -> None:
        self._count_error()
        log.warning(
            "output %s: connection lost (%s); reconnecting", self.label, self._describe(exc)
        )
        self._drop_connection()
        self._set_state(OutputState.RECONNECTING)
        self._next_attempt = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.max_delay)

    def _drop_connection(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception), self._busy():
                container.close()
