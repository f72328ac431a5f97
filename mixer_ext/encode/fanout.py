"""The encoder stage and its fan-out: what the mixer clock hands its output to.

``OutputPipeline`` implements ``MixSink``.  Threads and queues::

    event loop (mixer tick)                encoder thread             output threads
    on_mix / on_payload ──bounded queue──> AAC encode once ──offer()──> HLS │ RTMP │ file
                          (ENCODER_QUEUE,    (ENCODE_SECONDS)         (each its own bounded
                           drop newest)                                 queue, drop newest)

* ``on_mix`` / ``on_payload`` never block: the hand-off queue holds
  ``ENCODER_QUEUE`` items (about 5 s of audio); when it is full the incoming
  item is dropped and counted in ``mixer_encoder_dropped_frames_total``
  (only possible if the machine cannot encode in real time).
* Packets and payloads reach every output in the order the mixer produced
  them; no output encodes again (RTMP muxes them in a child process, see
  ``mixer_ext.outputs.rtmp``).  A stalled or failed output only loses its
  own packets (see ``mixer_ext.outputs.base``).
* Payload listeners (the HTTP endpoint's WebSocket) are called on the event
  loop from ``on_payload``, before encoding: they must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import av.logging

from mixer_ext.allocator import limit_malloc_arenas
from mixer_ext.context import OutputSpec
from mixer_ext.core.frames import MixedFrame
from mixer_ext.core.payload import MetadataPayload, TimedPayload
from mixer_ext.encode.encoder import AacEncoder, check_bitrate
from mixer_ext.errors import MixerError
from mixer_ext.metrics import ENCODE_SECONDS, ENCODER_DROPPED_FRAMES
from mixer_ext.outputs.base import CLOSE_TIMEOUT, Output, OutputError, OutputState
from mixer_ext.outputs.factory import build_output
from mixer_ext.outputs.hls import HlsOutput
from mixer_ext.settings import Settings

log = logging.getLogger(__name__)

#: about 5 s of 20 ms frames, plus their payloads
ENCODER_QUEUE = 256

PayloadListener = Callable[[MetadataPayload], None]


class OutputPipeline:
    """One AAC encoder feeding every configured output.

    Lifecycle: ``await start()`` (raises ``MixerError`` only when *every*
    output failed to open), then ``on_mix``/``on_payload`` from the mixer
    tick, then ``await close(end_of_stream)`` once.  ``status()`` is safe at
    any time.
    """

    def __init__(
        self,
        specs: Sequence[OutputSpec],
        bitrate_kbps: int,
        settings: Settings,
        *,
        rtmp_first_delay: float | None = None,
        rtmp_stall_timeout: float | None = None,
        rtmp_start_ms: int | None = None,
        keep_recordings: bool = False,
    ) -> None:
        if not specs:
            raise MixerError("no outputs configured")
        self.specs = list(specs)
        self.bitrate_kbps = check_bitrate(bitrate_kbps)
        self.settings = settings
        #: a resumed run: a recording never overwrites the earlier process's file
        self.keep_recordings = keep_recordings
        #: test/bench knobs: RTMP's first retry delay and stall timeout (seconds), and the
        #: FLV timestamp (ms) a connection starts at
        self._rtmp_options: dict[str, Any] = {}
        if rtmp_first_delay is not None:
            self._rtmp_options["first_delay"] = rtmp_first_delay
        if rtmp_stall_timeout is not None:
            self._rtmp_options["stall_timeout"] = rtmp_stall_timeout
        if rtmp_start_ms is not None:
            self._rtmp_options["start_ms"] = rtmp_start_ms
        self.outputs: list[Output] = []
        self._queue: queue.Queue[MixedFrame | TimedPayload | None] = queue.Queue(
            maxsize=ENCODER_QUEUE
        )
        self._encoder: AacEncoder | None = None
        self._thread: threading.Thread | None = None
        self._listeners: list[PayloadListener] = []
        #: called with an HLS output's name after each playlist rewrite (output threads);
        #: replaced, never mutated, so an output thread iterates a stable tuple
        self._hls_listeners: tuple[Callable[[str], None], ...] = ()
        self._closed = False
        #: a frame was dropped: the next one queued carries ``discontinuity``
        self._gap = False
        self.dropped_frames = 0
        self.frames_encoded = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create the encoder and open every output (off the event loop)."""
        # before the encoder and output threads exist: their arenas would keep what
        # FFmpeg frees per segment (issue 16.0, mixer_ext/allocator.py)
        limit_malloc_arenas()
        if av.logging.get_level() is None:
            # Route FFmpeg's own log lines through Python logging (and so through the
            # redacting filter) instead of letting libav print to stderr directly.
            av.logging.set_level(av.logging.WARNING)
        self._encoder = await asyncio.to_thread(AacEncoder, self.bitrate_kbps)
        params = self._encoder.params
        for spec in self.specs:
            output = build_output(
                spec,
                params,
                self.settings,
                keep_recordings=self.keep_recordings,
                rtmp_options=self._rtmp_options,
                on_hls_change=self._hls_changed,
            )
            self.outputs.append(output)
        failures: list[str] = []
        for output in self.outputs:
            try:
                await asyncio.to_thread(output.open)
            except OutputError as exc:
                failures.append(f"{output.label}: {exc}")  # already logged by the output
        if len(failures) == len(self.outputs):
            raise MixerError("every output failed to start: " + "; ".join(failures))
        self._thread = threading.Thread(target=self._encode_loop, name="encoder", daemon=True)
        self._thread.start()
        log.info(
            "outputs started: %s",
            ", ".join(f"{o.label} ({o.state.value})" for o in self.outputs),
        )

    async def close(self, end_of_stream: bool = True, within: float = CLOSE_TIMEOUT) -> None:
        """Flush the encoder, finish every output (ENDLIST, moov, FLV end), join the threads.

        ``end_of_stream=False`` finishes files and segments but leaves the HLS
        playlist open (no ENDLIST).  Everything returns within ``within``
        seconds (the outputs close in parallel); an output still busy then is
        logged and left to its daemon thread.  Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + within
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(self._stop_encoder, thread, deadline)
        left = max(0.1, deadline - time.monotonic())
        await asyncio.gather(
            *(asyncio.to_thread(o.close, end_of_stream, left) for o in self.outputs),
            return_exceptions=True,
        )
        log.info(
            "outputs closed: %s",
            ", ".join(f"{o.label} ({o.state.value})" for o in self.outputs),
        )

    def _stop_encoder(self, thread: threading.Thread, deadline: float) -> None:
        # the encoder's flush must leave the outputs most of the time
        deadline = time.monotonic() + (deadline - time.monotonic()) / 3
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ MixSink
    def on_mix(self, frame: MixedFrame) -> None:
        """Hand one mixed frame to the encoder thread; never blocks (drops newest when full)."""
        self._offer(frame)

    def on_payload(self, payload: TimedPayload) -> None:
        """Publish a payload to listeners and queue it for the in-band carriers.

        Listeners (the worker's ``/ws/metadata``) get the mixer's payloads only; an
        app's payload (``AppPayload``) goes in-band alone.
        """
        if not isinstance(payload, MetadataPayload):
            self._offer(payload)
            return
        for listener in list(self._listeners):
            try:
                listener(payload)
            except Exception:  # a listener's bug must not break the tick
                log.exception("payload listener failed")
        self._offer(payload)

    def _offer(self, item: MixedFrame | TimedPayload) -> None:
        if self._closed or self._thread is None:
            return
        is_frame = isinstance(item, MixedFrame)
        if self._gap and isinstance(item, MixedFrame):
            item = replace(item, discontinuity=True)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped_frames += 1
            ENCODER_DROPPED_FRAMES.inc()
            self._gap = self._gap or is_frame
        else:
            self._gap = self._gap and not is_frame

    # ------------------------------------------------------------------ payloads for apps
    def add_payload_listener(self, listener: PayloadListener) -> Callable[[], None]:
        """Call ``listener(payload)`` on the event loop for every payload; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def add_hls_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(name)`` after every playlist rewrite of the HLS output ``name``,
        on that output's thread (it must not block: e.g. ``HlsOrigin.notify_threadsafe``);
        returns a remover."""
        self._hls_listeners = (*self._hls_listeners, listener)

        def remove() -> None:
            self._hls_listeners = tuple(x for x in self._hls_listeners if x is not listener)

        return remove

    def _hls_changed(self, name: str) -> None:
        for listener in self._hls_listeners:
            try:
                listener(name)
            except Exception:  # a listener's bug must not break the output
                log.exception("HLS listener failed")

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """``{"outputs": [per-output status], "encoder": {...}}``; labels are redacted."""
        return {
            "outputs": [o.status() for o in self.outputs],
            "encoder": {
                "bitrate_kbps": self.bitrate_kbps,
                "frames_encoded": self.frames_encoded,
                "dropped_frames": self.dropped_frames,
                "queued": self._queue.qsize(),
            },
        }

    def first_segment_written(self) -> bool:
        """True once some HLS output has listed a segment (for readiness)."""
        return any(isinstance(o, HlsOutput) and o.first_segment_written() for o in self.outputs)

    # ------------------------------------------------------------------ encoder thread
    def _encode_loop(self) -> None:
        encoder = self._encoder
        if encoder is None:
            raise RuntimeError("encoder thread started before the encoder")
        live = [o for o in self.outputs if o.state is not OutputState.FAILED]
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    for packet in encoder.flush():
                        for output in live:
                            output.offer(packet)
                    return
                if isinstance(item, MixedFrame):
                    t0 = time.perf_counter()
                    packets = encoder.encode(item)
                    ENCODE_SECONDS.observe(time.perf_counter() - t0)
                    self.frames_encoded += 1
                    for packet in packets:
                        for output in live:
                            output.offer(packet)
                else:
                    for output in live:
                        output.offer(item)
            except Exception:  # top level of the encoder thread: log, keep the timeline going
                log.exception("encoder: dropping an item after an unexpected error")
                self.dropped_frames += 1
                ENCODER_DROPPED_FRAMES.inc()
