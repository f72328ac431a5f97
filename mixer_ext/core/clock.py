"""The one master clock: ticks the ``Mixer`` every 20 ms and feeds its inputs.

Tick ``n`` is due at ``start + n * 0.020`` on a monotonic clock (never
``sleep(0.020)`` in a loop, so error never adds up).  If the loop falls
behind by less than ``RESYNC_AFTER``, the missed ticks run at once, so the output
timeline never loses a sample; after a longer stall (SIGSTOP, VM steal) the clock
re-anchors at the current time instead of replaying seconds of ticks back to back
(counted in ``mixer_clock_resyncs_total``); the first frame after it is flagged
``discontinuity``, so the outputs mark the gap (HLS: ``#EXT-X-DISCONTINUITY``).
Every tick's lateness goes into ``TICK_LATENESS``.

A track attached with an ``EncodedSource`` (what the connectors give: the
track's RTP payloads, tapped from aiortc's receiver by
``mixer_ext.connectors.rtptap``) has no task at all: each payload is stamped with
its arrival on the mixer timeline and buffered, still encoded, in its input; the
tick decodes every input's new payloads in one place (``Input.decode_pending``).
A track attached without one (a plain ``MediaStreamTrack``: tests, simulations)
has its own named reader task: ``await track.recv()`` and push the decoded frame,
stamped with its arrival.  The tick never awaits a track (a muted or silent
aiortc track simply blocks in ``recv()``), so one quiet participant never stalls
the mix.  A reader whose track ends (``MediaStreamError``) logs once and exits;
it never spins.  Undecodable payloads are counted in
``mixer_input_malformed_frames_total`` and logged once per input, then at most
every ``MALFORMED_LOG_INTERVAL`` seconds.

Ownership: ``MixerClock`` owns the tick task (``run()``, or the one
``start()`` creates) and every reader task; ``stop()`` cancels them all with
a timeout and awaits them.  The sink's ``on_mix``/``on_payload`` are called
from the tick and must not block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mixer_ext import metrics
from mixer_ext.core.frames import TICK_SECONDS, TICKS_PER_PAYLOAD, MixSink
from mixer_ext.core.mixer import Mixer
from mixer_ext.log import log_event
from mixer_ext.tasks import stop_tasks

if TYPE_CHECKING:
    from aiortc.mediastreams import MediaStreamTrack

    from mixer_ext.core.frames import EncodedSource
    from mixer_ext.core.input import Input

log = logging.getLogger(__name__)

#: how long stop() waits for a cancelled task before giving up on it
STOP_TIMEOUT = 2.0
#: a tick later than this re-anchors the clock instead of replaying what was missed
RESYNC_AFTER = 1.0
#: seconds between two log lines about one input's undecodable payloads
MALFORMED_LOG_INTERVAL = 10.0


class MixerClock:
    """Runs ``mixer.tick()`` on schedule and hands the results to ``sink``."""

    def __init__(
        self,
        mixer: Mixer,
        sink: MixSink,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mixer = mixer
        self.sink = sink
        self._clock = clock
        self._start: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._readers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._sources: dict[tuple[str, str], EncodedSource] = {}
        self._reported: dict[tuple[str, str], tuple[int, int, int]] = {}
        #: input key -> (malformed frames counted so far, last log time, count logged then)
        self._malformed: dict[tuple[str, str], tuple[int, float, int]] = {}
        #: ticks run so far
        self.ticks = 0
        #: largest lateness of a tick against its schedule, seconds
        self.max_lateness = 0.0
        #: times the clock re-anchored after a stall longer than RESYNC_AFTER
        self.resyncs = 0
        #: times the sink raised (logged, then the clock goes on)
        self.sink_errors = 0
        self._retired: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ tick task
    def start(self) -> asyncio.Task[None]:
        """Run ``run()`` in a named task owned by this clock."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="mixer-clock")
        return self._task

    def arrival(self) -> float | None:
        """Now, in seconds on the mixer timeline (tick n at n * 0.020); None before start."""
        return None if self._start is None else self._clock() - self._start

    async def run(self) -> None:
        """Tick forever (until cancelled).

        The task running this is the tick task and belongs to the clock:
        ``stop()`` cancels it.  Use ``start()``, or run it in a task of its own.
        The timeline continues from ``mixer.tick_index`` (0 for a new mixer).
        """
        if self._task is None:
            self._task = asyncio.current_task()
        start = self._clock() - self.mixer.tick_index * TICK_SECONDS
        self._start = start
        n = self.mixer.tick_index
        resynced = False
        while True:
            due = start + n * TICK_SECONDS
            now = self._clock()
            if now >= due:
                await asyncio.sleep(0)  # catching up: let readers in between ticks
            while now < due:  # asyncio may wake a hair early: never tick before due
                await asyncio.sleep(due - now)
                now = self._clock()
            lateness = max(0.0, now - due)
            if lateness > RESYNC_AFTER:
                # The loop did not run for a while (SIGSTOP, VM steal, a blocked loop):
                # running every missed tick back to back would push seconds of stale
                # audio through the encoder and every output at once. Go on from now.
                start = now - n * TICK_SECONDS
                self._start = start
                self.resyncs += 1
                metrics.CLOCK_RESYNCS.inc()
                log.warning(
                    "mixer: the loop stalled %.1f s; clock re-anchored (resync %d)",
                    lateness,
                    self.resyncs,
                )
                lateness = 0.0
                resynced = True
            self.max_lateness = max(self.max_lateness, lateness)
            metrics.TICK_LATENESS.observe(lateness)
            frame, payload = self.mixer.tick()
            if resynced:
                frame = replace(frame, discontinuity=True)
                resynced = False
            n += 1
            self.ticks += 1
            try:
                self.sink.on_mix(frame)
                # an app's payloads as soon as they are posted, then the window's own
                # (both stamped no earlier than the audio already handed over: issue 26)
                for app in self.mixer.take_app_payloads():
                    self.sink.on_payload(app)
                if payload is not None:
                    metrics.PAYLOADS.inc()
                    self.sink.on_payload(payload)
            except Exception:  # the next stage's bug must not stop the clock
                self.sink_errors += 1
                if self.sink_errors == 1 or self.sink_errors % 1000 == 0:
                    log.exception("mixer: sink failed (%d times so far)", self.sink_errors)
            if n % TICKS_PER_PAYLOAD == 0:
                self._export_stats()

    def _export_stats(self) -> None:
        """Input counters into the (identity-free) Prometheus metrics, once per window."""
        metrics.PARTICIPANTS.set(self.mixer.participant_count)
        metrics.INPUTS.set(self.mixer.input_count)
        seen: dict[tuple[str, str], tuple[int, int, int]] = {}
        for st in self.mixer.input_stats():
            inp = st.input
            now = (inp.late_frames, inp.lost_frames, inp.concealed_ticks)
            key = (st.identity, st.track_sid)
            late0, lost0, conc0 = self._reported.get(key, (0, 0, 0))
            metrics.INPUT_LATE_FRAMES.inc(max(0, now[0] - late0))
            metrics.INPUT_LOST_FRAMES.inc(max(0, now[1] - lost0))
            metrics.INPUT_CONCEALED_FRAMES.inc(max(0, now[2] - conc0))
            metrics.INPUT_BUFFERED_LATENCY.observe(inp.latency_seconds)
            seen[key] = (max(now[0], late0), max(now[1], lost0), max(now[2], conc0))
            if inp.malformed_frames:
                self._report_malformed(key, inp)
        self._reported = seen

    def _report_malformed(self, key: tuple[str, str], inp: Input) -> None:
        count = inp.malformed_frames
        counted, logged_at, logged = self._malformed.get(key, (0, 0.0, 0))
        if count <= counted:
            return
        metrics.INPUT_MALFORMED_FRAMES.inc(count - counted)
        now = self._clock()
        if counted == 0:
            log.warning(
                "input: dropping undecodable payloads from %s/%s: the decoder refused %d so "
                "far (further ones are counted, summarized every %gs)",
                key[0],
                key[1],
                count,
                MALFORMED_LOG_INTERVAL,
            )
            self._malformed[key] = (count, now, count)
        elif now - logged_at >= MALFORMED_LOG_INTERVAL:
            log.warning(
                "input: the decoder refused %d more undecodable payloads from %s/%s in the "
                "last %.0f s",
                count - logged,
                key[0],
                key[1],
                now - logged_at,
            )
            self._malformed[key] = (count, now, count)
        else:
            self._malformed[key] = (count, logged_at, logged)

    # ------------------------------------------------------------------ readers
    def attach_track(
        self,
        identity: str,
        track_sid: str,
        track: MediaStreamTrack,
        source: EncodedSource | None = None,
    ) -> None:
        """Add an input for ``track`` (replaces one with the same key).

        With ``source`` the input is fed its encoded payloads (no task); without, a
        reader task pushes what ``track.recv()`` returns.
        """
        key = (identity, track_sid)
        old = self._readers.pop(key, None)
        if old is not None:  # cancelled now, awaited by stop() if still running then
            old.cancel()
            self._retired.add(old)
            old.add_done_callback(self._retired.discard)
        old_source = self._sources.pop(key, None)
        if old_source is not None:
            old_source.close()
        self._malformed.pop(key, None)
        inp = self.mixer.add_input(identity, track_sid)
        if source is not None:
            push, arrival = inp.push_encoded, self.arrival

            def sink(codec: Any, seq: int, timestamp: int, payload: bytes) -> None:
                push(codec, seq, timestamp, payload, arrival())

            source.connect(sink)
            self._sources[key] = source
            return
        self._readers[key] = asyncio.create_task(
            self._read(identity, track_sid, track, inp.push),
            name=f"mixer-input:{identity}:{track_sid}",
        )

    async def detach_track(self, identity: str, track_sid: str) -> None:
        """Stop the reader and fade the input out of the mix."""
        task = self._readers.pop((identity, track_sid), None)
        source = self._sources.pop((identity, track_sid), None)
        if source is not None:
            source.close()
        self.mixer.remove_input(identity, track_sid)
        if task is not None:
            await _cancel(task)

    async def remove_participant(self, identity: str) -> None:
        """Stop every reader of ``identity`` and take it out of the mix (idempotent)."""
        for key in [k for k in self._sources if k[0] == identity]:
            self._sources.pop(key).close()
        for key in [k for k in self._readers if k[0] == identity]:
            await _cancel(self._readers.pop(key))
        self.mixer.remove_participant(identity)

    async def _read(  # the reader task: one per track, owned by this clock
        self,
        identity: str,
        track_sid: str,
        track: MediaStreamTrack,
        push: Callable[..., None],
    ) -> None:
        import av
        from aiortc.mediastreams import MediaStreamError

        bad = 0
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    log_event(log, "input_ended", identity=identity, track_sid=track_sid)
                    return
                try:
                    push(frame, self.arrival())
                except (ValueError, TypeError, AttributeError, av.error.FFmpegError) as exc:
                    bad += 1
                    metrics.INPUT_MALFORMED_FRAMES.inc()
                    if bad == 1:  # once per track: a broken sender must not flood the log
                        log.warning(
                            "input: dropping malformed frame from %s/%s: %s",
                            identity,
                            track_sid,
                            exc,
                        )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("input: reader for %s/%s failed", identity, track_sid)

    # ------------------------------------------------------------------ stop
    async def stop(self) -> None:
        """Cancel every reader and the tick task; wait (bounded) for them to exit."""
        for source in self._sources.values():
            source.close()
        self._sources.clear()
        tasks = list(self._readers.values()) + list(self._retired)
        self._readers.clear()
        self._retired.clear()
        me = asyncio.current_task()
        if self._task is not None and self._task is not me:
            tasks.append(self._task)
        self._task = None
        await stop_tasks(tasks, STOP_TIMEOUT, log)


async def _cancel(task: asyncio.Task[None]) -> None:
    await stop_tasks([task], STOP_TIMEOUT, log)
