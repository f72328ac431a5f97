"""The extension worker: ``mixer-ext run --context CONTEXT``.

From a validated context to a live, annotated stream until the maximum
participant duration::

    initializing -> outputs open, mixer clock running (the timeline starts,
                    even in an empty room)
                 -> join the room (transient failures retried with backoff)
    started      -> events drive the roster; tracks feed the mixer
    ended        -> max duration reached / room ended / SIGTERM or SIGINT:
                    stop the clock, finish every output (ENDLIST, recording
                    finalized, RTMP closed), leave the room, report, exit 0
    failed       -> exit 1 with a one-line reason

The maximum duration counts from the first successful join.  A transient
loss of the room before then is retried (that is not reconnecting after the
limit); once the limit is reached, or the room says so, the worker never
joins again.

A restart is a resume (``worker.runstate``): a worker started again on the
outputs of a run that never finished (SIGKILL, OOM) keeps that run's first
join for its deadline, continues its status sequence numbers, continues its
HLS playlist after a discontinuity and records into a new file beside the
earlier recording instead of overwriting it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from mixer_ext import eventloop
from mixer_ext.connectors.base import (
    Disconnected,
    Reason,
    RoomConnectError,
    RoomConnector,
    RoomEvent,
)
from mixer_ext.connectors.factory import check_room_settings, make_connector, read_room_token_file
from mixer_ext.context import ExtensionContext, HlsOutputSpec, load_context
from mixer_ext.core.clock import MixerClock
from mixer_ext.core.mixer import Mixer
from mixer_ext.core.roster import Attach, Change, Detach, Enabled, Joined, Left, Roster
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.errors import MixerError
from mixer_ext.log import log_event
from mixer_ext.metrics import PARTICIPANTS, ROOM_JOINS, start_metrics_server
from mixer_ext.settings import Settings
from mixer_ext.tasks import stop_tasks
from mixer_ext.worker import decode_errors
from mixer_ext.worker.appmeta import AppMetadataPoller, metadata_url
from mixer_ext.worker.budget import ShutdownBudget
from mixer_ext.worker.policy import (
    CONNECT_TIMEOUT,
    RETRY_FIRST_DELAY,
    GiveUp,
    JoinPolicy,
    Outcome,
    outcome_of_disconnect,
)
from mixer_ext.worker.runstate import RunState, RunStateFile, state_path
from mixer_ext.worker.status import EndReason, FailReason, State, StatusReporter

log = logging.getLogger(__name__)

T = TypeVar("T")
ConnectorFactory = Callable[[Settings, str, str], RoomConnector]


class _Stopped(Exception):
    """Raised inside the run when SIGTERM/SIGINT or the deadline wins a race."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Worker:
    """One run of the extension for one room.  ``await run()`` returns the exit code."""

    def __init__(
        self,
        context: ExtensionContext,
        settings: Settings,
        *,
        connector_factory: ConnectorFactory = make_connector,
        player_dir: Path | None = None,
    ) -> None:
        self.context = context
        self.settings = settings
        self.identity = context.identity
        self.room = context.room.name
        self.max_duration = float(context.effective_max_duration(settings.max_participant_duration))
        self._connector_factory = connector_factory
        self._player_dir = player_dir
        self.status = StatusReporter(self.room, self.identity, settings.status_callback_url)
        self._run_file = RunStateFile(state_path(context.output_specs, settings.hls_dir))
        #: this run's persisted state; ``resumed`` when an earlier process left it unfinished
        self.run_state = RunState()
        self.resumed = False
        #: seconds for each shutdown stage, from MIXER_SHUTDOWN_BUDGET
        self.budget = ShutdownBudget(settings.shutdown_budget)
        self._stop = asyncio.Event()
        #: a stop was requested (a signal): skip the HTTP linger
        self._hurry = asyncio.Event()
        self._http: Any = None
        self._stop_outcome: Outcome | None = None
        self.policy: JoinPolicy | None = None
        self.roster = Roster(self.identity)

    @property
    def joins(self) -> int:
        """Successful joins so far in this run."""
        return 0 if self.policy is None else self.policy.joins

    # ------------------------------------------------------------------ control
    def request_stop(self, reason: str = EndReason.STOPPED) -> None:
        """End the run cleanly (SIGTERM/SIGINT), within the shutdown budget.

        The HTTP linger is skipped: whoever stops the worker wants it gone (a pod
        being deleted has ``terminationGracePeriodSeconds`` left, no more).
        """
        self._hurry.set()
        if self._stop.is_set():
            return
        self._stop_outcome = Outcome(State.ENDED, reason)
        log.info("stop requested (%s): ending the stream", reason)
        self._stop.set()

    # ------------------------------------------------------------------ run
    async def run(self) -> int:
        earlier = self._run_file.load()
        if earlier is not None:
            self.run_state, self.resumed = earlier, True
            log.info(
                "resuming an unfinished run (process %d of it; first join %s)",
                earlier.runs + 1,
                "not yet"
                if earlier.first_join is None
                else f"{time.time() - earlier.first_join:.0f} s ago",
            )
        self.run_state.runs += 1
        self.status.sequence = self.run_state.status_sequence
        self.status.on_report = self._save_sequence
        self._run_file.save(self.run_state)
        self.status.start()
        self.status.report(State.INITIALIZING)
        try:
            outcome = await self._run()
        except Exception as exc:  # top level of the run: anything unexpected
            log.exception("internal error")
            outcome = Outcome(
                State.FAILED, FailReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
            )
        self.run_state.ended = True  # the outputs are finalized: a new start is a new run
        self.status.report(outcome.state, outcome.reason, outcome.detail)
        if self._http is not None:
            await self._linger()
        await self.status.aclose(self.budget.status)
        if self._http is not None:
            await _bounded("http endpoint", self._http.stop(), self.budget.http)
        if outcome.state is State.FAILED:
            log.error(
                "run failed: %s%s", outcome.reason, f": {outcome.detail}" if outcome.detail else ""
            )
        return outcome.exit_code

    async def _run(self) -> Outcome:
        pipeline = OutputPipeline(
            self.context.output_specs,
            self.context.audio_bitrate,
            self.settings,
            keep_recordings=self.resumed,
        )
        try:
            await pipeline.start()
        except MixerError as exc:
            return Outcome(State.FAILED, FailReason.ERROR_STREAMING_MEDIA, str(exc))
        try:
            self._http = http = await self._start_http(pipeline)
            if self.settings.metrics_port is not None:
                start_metrics_server(self.settings.metrics_port, self.settings.http_host)
        except OSError as exc:
            share = self.budget.outputs
            await _bounded("outputs", pipeline.close(end_of_stream=False, within=share), share)
            return Outcome(
                State.FAILED, FailReason.ERROR_LOADING_EXTENSION, f"cannot listen: {exc}"
            )
        mixer = Mixer(self.settings.jitter_buffer, exclude_identity=self.identity)
        clock = MixerClock(mixer, pipeline)
        clock_task = asyncio.get_running_loop().create_task(clock.run(), name="mixer-clock")
        # apps' timed metadata (POST .../TimedMetadata), when the API launched this worker
        app_url = metadata_url(self.settings.status_callback_url)
        app_metadata = (
            None if app_url is None else AppMetadataPoller(app_url, mixer.post_app_metadata)
        )
        if app_metadata is not None:
            app_metadata.start()
        outcome: Outcome
        connector: RoomConnector | None = None
        try:
            outcome, connector = await self._stay_in_room(clock, mixer, clock_task, http)
        finally:
            # Order matters: no more audio, then finish the outputs, then leave the room.
            # Each stage has its share of the shutdown budget (worker/budget.py).
            budget = self.budget
            if app_metadata is not None:
                await _bounded("app metadata", app_metadata.aclose(), budget.cancel)
            await _bounded("mixer clock", clock.stop(), budget.clock)
            await stop_tasks([clock_task], budget.clock, log)
            await _bounded(
                "outputs",
                pipeline.close(end_of_stream=True, within=budget.outputs),
                budget.outputs,
            )
            if connector is not None:
                await _bounded("room disconnect", connector.disconnect(), budget.room)
            if http is not None:
                http.set_ready(False)
        PARTICIPANTS.set(0)
        return outcome

    def _save_sequence(self, sequence: int) -> None:
        self.run_state.status_sequence = sequence
        self._run_file.save(self.run_state)

    async def _linger(self) -> None:
        """Keep serving the finished HLS a while, so players see #EXT-X-ENDLIST."""
        linger = self.settings.http_linger
        if linger <= 0 or self._hurry.is_set():
            return
        log.info("stream ended; serving HLS for %.0f s more (signal again to skip)", linger)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), linger)

    async def _start_http(self, pipeline: OutputPipeline) -> Any:
        if self.settings.http_port is None:
            return None
        from mixer_ext.serve.http import HttpEndpoint

        first_hls = next(
            (s.name for s in self.context.output_specs if isinstance(s, HlsOutputSpec)), None
        )
        http = HttpEndpoint(
            self.settings,
            hls_dir=self.settings.hls_dir,
            player_dir=self._player_dir,
            default_stream=first_hls,
            pipeline=pipeline,
        )
        await http.start()
        log.info("HTTP endpoint on http://%s:%s/", self.settings.http_host, http.port)
        return http

    # ------------------------------------------------------------------ room
    async def _stay_in_room(
        self,
        clock: MixerClock,
        mixer: Mixer,
        clock_task: asyncio.Task[None],
        http: Any,
    ) -> tuple[Outcome, RoomConnector | None]:
        policy = self.policy = JoinPolicy(
            self.max_duration, time.monotonic(), first_delay=RETRY_FIRST_DELAY
        )
        if self.run_state.first_join is not None:  # a resumed run: its deadline stands
            policy.resume(time.monotonic(), time.time() - self.run_state.first_join)
        connector: RoomConnector | None = None
        while True:
            connector = self._connector_factory(self.settings, self.room, self.identity)
            try:
                await self._race(asyncio.wait_for(connector.connect(), CONNECT_TIMEOUT), clock_task)
            except _Stopped as stop:
                return stop.outcome, connector
            except RoomConnectError as exc:
                if exc.permanent:
                    return (
                        Outcome(
                            State.FAILED,
                            FailReason.ERROR_LOADING_EXTENSION,
                            f"{exc} ({exc.reason})",
                        ),
                        None,
                    )
                why = f"{exc} ({exc.reason})"
            except (OSError, TimeoutError, MixerError) as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                # ---- in the room
                ROOM_JOINS.inc()
                if policy.joined(time.monotonic()):
                    if self.run_state.first_join is None:
                        self.run_state.first_join = time.time()
                    self.status.report(State.STARTED)
                log_event(log, "joined", room=self.room, identity=self.identity, join=policy.joins)
                if http is not None:
                    http.set_ready(True)
                try:
                    gone = await self._race(self._pump(connector, clock, mixer), clock_task)
                except _Stopped as stop:
                    return stop.outcome, connector
                finally:
                    if http is not None:
                        http.set_ready(False)
                    await self._forget_room(clock, mixer)
                policy.left(time.monotonic())
                end = outcome_of_disconnect(gone.reason, gone.permanent, self.identity)
                if end is not None:
                    return end, None
                why = f"disconnected from the room: {gone.reason}"
            # ---- transient: retry with backoff, unless it has gone on too long
            await _bounded("room disconnect", connector.disconnect(), self.budget.room)
            decision = policy.failed(time.monotonic(), self.room, why)
            if isinstance(decision, GiveUp):
                return decision.outcome, None
            log.warning("room %r: %s; joining again in %.1f s", self.room, why, decision.delay)
            try:
                await self._race(asyncio.sleep(decision.delay), clock_task)
            except _Stopped as stop:
                return stop.outcome, None

    async def _race(self, aw: Awaitable[T], clock_task: asyncio.Task[None]) -> T:
        """Await ``aw`` unless a stop, the deadline or a dead mixer clock comes first."""
        loop = asyncio.get_running_loop()
        main = asyncio.ensure_future(aw)
        stop = loop.create_task(self._stop.wait(), name="worker-stop-wait")
        waiters: set[asyncio.Future[Any]] = {main, stop, clock_task}
        deadline_task: asyncio.Task[None] | None = None
        remaining = None if self.policy is None else self.policy.remaining(time.monotonic())
        if remaining is not None:
            deadline_task = loop.create_task(asyncio.sleep(remaining), name="worker-deadline")
            waiters.add(deadline_task)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stop, deadline_task):
                if t is not None and not t.done():
                    t.cancel()
        if main.done():
            return main.result()
        await stop_tasks([main], self.budget.cancel, log)
        if self._stop.is_set():
            raise _Stopped(self._stop_outcome or Outcome(State.ENDED, EndReason.STOPPED))
        if clock_task.done():
            exc = clock_task.exception() if not clock_task.cancelled() else None
            raise _Stopped(
                Outcome(State.FAILED, FailReason.INTERNAL_ERROR, f"mixer clock stopped: {exc!r}")
            )
        log.info("maximum participant duration (%.0f s) reached", self.max_duration)
        raise _Stopped(Outcome(State.ENDED, EndReason.MAX_PARTICIPANT_DURATION))

    async def _pump(
        self, connector: RoomConnector, clock: MixerClock, mixer: Mixer
    ) -> Disconnected:
        async for event in connector.events():
            if isinstance(event, Disconnected):
                log_event(log, "disconnected", room=self.room, reason=event.reason)
                return event
            await self._apply(event, clock, mixer)
        return Disconnected(Reason.CONNECTION_LOST)

    async def _apply(self, event: RoomEvent, clock: MixerClock, mixer: Mixer) -> None:
        """Carry one room event into the mix, through the roster."""
        await self._execute(self.roster.apply(event), clock, mixer)

    async def _execute(self, changes: list[Change], clock: MixerClock, mixer: Mixer) -> None:
        for change in changes:
            match change:
                case Joined(identity=ident):
                    mixer.add_participant(ident)
                    log_event(log, "participant-joined", identity=ident)
                case Left(identity=ident, reason=reason):
                    await clock.remove_participant(ident)
                    log_event(log, "participant-left", identity=ident, reason=reason)
                case Attach(
                    identity=ident, track_sid=sid, track=track, enabled=enabled, source=source
                ):
                    clock.attach_track(ident, sid, track, source)  # replaces one of the same sid
                    mixer.set_enabled(ident, sid, enabled)
                    log_event(log, "track-subscribed", identity=ident, track=sid, enabled=enabled)
                case Detach(identity=ident, track_sid=sid):
                    await clock.detach_track(ident, sid)
                    log_event(log, "track-unsubscribed", identity=ident, track=sid)
                case Enabled(identity=ident, track_sid=sid, enabled=enabled):
                    mixer.set_enabled(ident, sid, enabled)
                    what = "track-enabled" if enabled else "track-disabled"
                    log_event(log, what, identity=ident, track=sid)

    async def _forget_room(self, clock: MixerClock, mixer: Mixer) -> None:
        """After leaving: drop every participant; the next join announces them again."""
        await self._execute(self.roster.clear("bot-left"), clock, mixer)


async def _bounded(what: str, aw: Awaitable[Any], seconds: float) -> None:
    """Await a shutdown step with its share of the budget; log (never raise) what goes wrong."""
    try:
        await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        log.error("shutdown: %s did not finish within %.1f s", what, seconds)
    except Exception:
        log.exception("shutdown: %s failed", what)


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--context",
        required=True,
        metavar="FILE|JSON",
        help="the extension context: a file path, inline JSON (starting with '{'), or '-' "
        "to read it from standard input (keeps RTMP stream keys out of the process list)",
    )


async def _main_async(worker: Worker) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal, loop, worker, sig)
    return await worker.run()


def _on_signal(loop: asyncio.AbstractEventLoop, worker: Worker, sig: signal.Signals) -> None:
    log.info("received %s", sig.name)
    worker.request_stop()


def main(args: argparse.Namespace, settings: Settings) -> int:
    context = load_context(args.context)  # ConfigError -> one line, exit 2, nothing connected
    settings = read_room_token_file(settings)
    check_room_settings(settings)
    decode_errors.install()  # undecodable payloads: counted, logged once per track then every 10 s
    worker = Worker(context, settings)
    eventloop.freeze_startup_heap()  # no 30 ms collector pass inside a tick (issue 27)
    return eventloop.run(_main_async(worker), settings.event_loop)
