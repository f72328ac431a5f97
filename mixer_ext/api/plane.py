"""The control plane's effects and watcher: what the API does about each state change.

``ControlPlane`` applies the effects of ``resources``' state machines (``processor_step``,
``streamer_step``, ``recording_step``): store writes, launcher calls (start, SIGTERM,
SIGKILL after ``STOP_GRACE``), queued status callbacks. Its watcher checks every
``WATCH_PERIOD`` for workers that died and resources past their maximum duration; on
start it re-adopts the workers the store names, including those it had asked to stop
(the store keeps since when), so a restart loses nothing. No HTTP here: the routes
(``routes``, ``playback``) call it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web

from mixer_ext.api import resources as r
from mixer_ext.api import timedmeta as tm
from mixer_ext.api.callbacks import CallbackDispatcher
from mixer_ext.api.client import basic_authorization
from mixer_ext.api.config import ApiSettings, LauncherKind
from mixer_ext.api.kube import JobTemplate, KubeJobs, KubernetesLauncher
from mixer_ext.api.launcher import LocalLauncher, WorkerLauncher
from mixer_ext.api.signing import playback_key
from mixer_ext.api.store import Store
from mixer_ext.context import parse_context
from mixer_ext.errors import ConfigError
from mixer_ext.hls.origin import HlsOrigin
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: how often the API checks workers and maximum durations (seconds)
WATCH_PERIOD = 0.5
#: a worker that ignores SIGTERM this long is killed (it gets 40 s to finish outputs)
STOP_GRACE = 45.0


class ControlPlane:
    """The API's state and its reactions; owns the watcher and callback tasks."""

    def __init__(
        self,
        cfg: ApiSettings,
        host: str,
        port: int,
        launcher: WorkerLauncher | None = None,
        *,
        room_rest: str | None = None,
    ) -> None:
        self.cfg = cfg
        #: the embedded room server's Video REST base, to learn a room's SID (source_sid)
        self.room_rest = room_rest
        self._lookups: set[asyncio.Task[None]] = set()
        self.public_url = cfg.api_public_url or f"http://{host}:{port}"
        self.internal_url = (
            cfg.api_internal_url
            or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        )
        if cfg.auth_token is None:  # load_api_settings refuses this earlier
            raise ConfigError("MIXER_AUTH_TOKEN is required")
        self.auth_token = cfg.auth_token.get_secret_value()
        self.keys = cfg.keys()
        self.data_dir = cfg.api_data_dir.resolve()
        self.hls_dir = self.data_dir / "hls"
        self.hls_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.database)
        self.launcher = launcher or _launcher(cfg, self.data_dir)
        self._proxy: aiohttp.ClientSession | None = None
        self.playback_key = playback_key(self.auth_token)
        self.callbacks = CallbackDispatcher(self.store, self.auth_token)
        #: the LL-HLS origin (blocking reload, hinted parts) over the workers' HLS directory
        self.origin = HlsOrigin(self.hls_dir)
        self._tasks: list[asyncio.Task[None]] = []
        #: app timed metadata on its way to each running processor's worker
        self.app_metadata: dict[str, tm.AppMetadataQueue] = {}
        self._app_metadata_posted: dict[str, asyncio.Event] = {}
        #: set when the API shuts down: long polls answer at once
        self.closing = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.launcher.refresh()  # the cluster's (or /proc's) view before adopting
        self._adopt()
        self._tasks = [
            asyncio.create_task(self.callbacks.run(), name="api-callbacks"),
            asyncio.create_task(self._watch(), name="api-watch"),
        ]

    async def stop(self) -> None:
        """Stop the API's own tasks; the workers keep running (they are re-adopted)."""
        await stop_tasks([*self._tasks, *self._lookups], 5.0, log)
        if isinstance(self.launcher, KubeJobs):
            await self.launcher.close()
        if self._proxy is not None:
            await self._proxy.close()
        self.store.close()

    def _adopt(self) -> None:
        for p in self.store.active_processors():
            worker = self.store.worker(p.sid)
            if worker is not None and self.launcher.adopt(worker[1]):
                log.info("adopted worker of %s (pid %s)", p.sid, worker[1].get("pid"))
                continue
            log.warning("worker of %s died while the API was down: failed", p.sid)
            self.processor_event(
                p.sid,
                r.ProcessorEvent.WORKER_LOST,
                message="the worker exited while the API was not running",
            )
        # workers asked to stop before the restart: wait for them again, or finish them
        for sid in self.store.stopping_workers():
            worker = self.store.worker(sid)
            if worker is None or not self.launcher.adopt(worker[1]):
                self._finished(sid)
            else:
                log.info("adopted stopping worker of %s (pid %s)", sid, worker[1].get("pid"))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_PERIOD)
            try:
                await self.launcher.refresh()
                self._check()
            except Exception:
                log.exception("watcher")

    def _check(self) -> None:
        now = time.time()
        for p in self.store.active_processors():
            if now >= p.date_created + p.max_duration:
                self.processor_event(p.sid, r.ProcessorEvent.MAX_DURATION)
                continue
            worker = self.store.worker(p.sid)
            if worker is None or not self.launcher.alive(worker[1]):
                code = self.launcher.exit_code(worker[1]) if worker else None
                self.processor_event(
                    p.sid,
                    r.ProcessorEvent.WORKER_LOST,
                    message=f"the worker exited (code {code}) without reporting an end",
                )
        for s in self.store.active_streamers():
            if now >= s.date_created + s.max_duration:
                self.streamer_event(s.sid, r.StreamerEvent.MAX_DURATION)
        for sid, since in self.store.stopping_workers().items():
            worker = self.store.worker(sid)
            if worker is None or not self.launcher.alive(worker[1]):
                self._finished(sid)
            elif now - since > STOP_GRACE:
                log.warning("worker of %s ignored SIGTERM for %.0f s: killed", sid, STOP_GRACE)
                self.launcher.kill(worker[1])

    def _finished(self, sid: str) -> None:
        """The worker of a finished processor has exited: tidy up after it."""
        self.store.set_worker_stopping(sid, None)
        self.app_metadata.pop(sid, None)
        posted = self._app_metadata_posted.pop(sid, None)
        if posted is not None:
            posted.set()  # a poll still waiting answers (410)
        worker = self.store.worker(sid)
        if worker is not None:
            self.launcher.forget(sid, worker[1])
        p = self.store.processor(sid)
        if p is not None:
            for vj in p.streamer_sids():
                _end_playlist(self.hls_dir / vj / "index.m3u8")
            self._complete_recordings(p)

    # ----------------------------------------------------------------- state changes
    def processor_event(
        self,
        sid: str,
        event: r.ProcessorEvent,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        p = self.store.processor(sid)
        if p is None:
            return
        now = time.time()
        step = r.processor_step(p, event, now, reason, message)
        if step.processor == p:
            return
        events = [e.event for e in step.effects if isinstance(e, r.Callback)]
        self.store.save_processor(step.processor, events, now)
        log.info(
            "processor %s: %s -> %s (%s)",
            sid,
            p.status.value,
            step.processor.status.value,
            step.processor.ended_reason or event.value,
        )
        for effect in step.effects:
            if isinstance(effect, r.StopWorker):
                worker = self.store.worker(sid)
                if worker is not None and self.launcher.alive(worker[1]):
                    self.launcher.stop(worker[1])
                    self.store.set_worker_stopping(sid, now)
                else:
                    self._finished(sid)
            elif isinstance(effect, r.StartStreamers):
                for vj in p.streamer_sids():
                    self.streamer_event(vj, r.StreamerEvent.SOURCE_STARTED)
                self._look_up_room_sid(p)
            elif isinstance(effect, r.EndStreamers):
                for vj in p.streamer_sids():
                    self.streamer_event(vj, r.StreamerEvent.SOURCE_ENDED, effect.reason)
        if (
            step.processor.status is not r.ProcessorStatus.STARTED
            and self.store.worker_stopping_since(sid) is None
        ):
            worker = self.store.worker(sid)
            if worker is None or not self.launcher.alive(worker[1]):
                self._finished(sid)
            else:
                self.store.set_worker_stopping(sid, now)
        self.callbacks.wake()

    def streamer_event(self, sid: str, event: r.StreamerEvent, reason: str | None = None) -> None:
        s = self.store.streamer(sid)
        if s is None:
            return
        now = time.time()
        step = r.streamer_step(s, event, now, reason)
        if step.streamer == s:
            return
        events = [e.event for e in step.effects if isinstance(e, r.Callback)]
        self.store.save_streamer(step.streamer, events, now)
        self.callbacks.wake()

    # ----------------------------------------------------------------- recordings' source
    def _look_up_room_sid(self, p: r.MediaProcessor) -> None:
        """The worker is in the room: ask the room server's Video REST for the room's SID,
        for recordings of a room named by its unique name (``source_sid``)."""
        name = parse_context(p.extension_context).room.name
        if self.room_rest is None or r.room_source_sid(name) is not None:
            return
        recs, _ = self.store.recordings(processor_sid=p.sid, limit=1)
        if not recs:
            return
        task = asyncio.get_running_loop().create_task(
            self._room_sid(p.sid, name), name=f"api-room-sid-{p.sid}"
        )
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _room_sid(self, processor_sid: str, name: str) -> None:
        url = f"{self.room_rest}/v1/Rooms/{quote(name, safe='')}"
        auth = {"Authorization": basic_authorization(self.cfg.account_sid, self.auth_token)}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
                http.get(url, headers=auth) as resp,
            ):
                body = await resp.json() if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("processor %s: the room's SID is unknown (%s)", processor_sid, exc)
            return
        sid = body.get("sid") if isinstance(body, dict) else None
        if not isinstance(sid, str) or r.room_source_sid(sid) is None:
            log.info("processor %s: the room server knows no SID for its room", processor_sid)
            return
        n = self.store.set_recording_source(processor_sid, sid)
        log.info("processor %s: room %s; source_sid set on %d recording(s)", processor_sid, sid, n)

    # ----------------------------------------------------------------- app metadata
    def running_processor(self, streamer_sid: str) -> r.MediaProcessor | None:
        """The processor streaming to this PlayerStreamer now (its worker said so)."""
        for p in self.store.active_processors():
            if p.streaming and streamer_sid in p.streamer_sids():
                return p
        return None

    def post_app_metadata(self, processor_sid: str, text: str) -> int:
        """Queue ``text`` for the processor's worker; raises ``tm.QueueFull``."""
        queue = self.app_metadata.setdefault(processor_sid, tm.AppMetadataQueue())
        seq = queue.post(text)
        self.app_metadata_event(processor_sid).set()
        return seq

    def app_metadata_event(self, processor_sid: str) -> asyncio.Event:
        return self._app_metadata_posted.setdefault(processor_sid, asyncio.Event())

    def close_polls(self) -> None:
        """The API is shutting down: every waiting long poll answers now."""
        self.closing.set()
        for event in self._app_metadata_posted.values():
            event.set()

    # ----------------------------------------------------------------- worker side
    def stream_base(self, streamer_sid: str) -> str | None:
        """The HTTP base of the worker streaming to this PlayerStreamer, when its HLS is
        not in the API's own data directory (kubernetes: the pod's endpoint)."""
        for p in self.store.active_processors():
            if streamer_sid in p.streamer_sids():
                worker = self.store.worker(p.sid)
                return self.launcher.stream_base(worker[1]) if worker else None
        return None

    async def proxy(self, url: str, query: dict[str, str]) -> web.Response:
        """GET from a worker's own HTTP endpoint (blocking reload parameters passed on)."""
        if self._proxy is None:
            self._proxy = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            async with self._proxy.get(url, params=query) as upstream:
                body = await upstream.read()
                return web.Response(
                    status=upstream.status,
                    body=body,
                    content_type=upstream.content_type,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("stream proxy to %s: %s", url.split("?")[0], exc)
            return web.Response(status=502, text="the stream's worker is not reachable\n")

    def worker_key(self, sid: str) -> str:
        mac = hmac.new(self.auth_token.encode(), b"worker-status:" + sid.encode(), "sha256")
        return mac.hexdigest()

    def launch(self, p: r.MediaProcessor) -> None:
        env = {
            "MIXER_HLS_DIR": str(self.hls_dir),
            "MIXER_STATUS_CALLBACK_URL": f"{self.internal_url}/internal/workers/{p.sid}/status"
            f"?key={self.worker_key(p.sid)}",
        }
        ctx = parse_context(p.extension_context)
        for spec in ctx.output_specs:
            if spec.kind == "file":
                path = (
                    spec.path if spec.path.is_absolute() else self.launcher.work / p.sid / spec.path
                )
                self.store.insert_recording(
                    r.new_recording(
                        p,
                        str(path),
                        spec.path.suffix.lstrip(".").lower(),
                        r.room_source_sid(ctx.room.name),
                    )
                )
        try:
            handle = self.launcher.start(
                p.sid, r.worker_context(p.extension, p.extension_context), env
            )
        except OSError as exc:
            log.error("processor %s: cannot launch its worker: %s", p.sid, exc)
            self.processor_event(p.sid, r.ProcessorEvent.LAUNCH_FAILED, message=str(exc))
            return
        self.store.set_worker(p.sid, self.launcher.name, handle)
        log.info("processor %s: worker pid %s", p.sid, handle.get("pid"))

    def _complete_recordings(self, p: r.MediaProcessor) -> None:
        """The worker has exited: each recording is as complete as it will get."""
        recs, _ = self.store.recordings(processor_sid=p.sid, limit=100)
        for rec in recs:
            path = Path(rec.path)
            size = path.stat().st_size if path.is_file() else None
            done = r.recording_step(
                rec,
                r.RecordingEvent.WORKER_EXITED,
                time.time(),
                media_size=size,
                duration=round(p.date_updated - p.date_created),
            )
            if done != rec:
                self.store.save_recording(done)


def _launcher(cfg: ApiSettings, data_dir: Path) -> WorkerLauncher:
    if cfg.api_launcher is LauncherKind.KUBERNETES:
        template = JobTemplate.from_settings(cfg)
        return KubeJobs(KubernetesLauncher.from_config(template), data_dir)
    return LocalLauncher(data_dir)


def _end_playlist(path: Path) -> None:
    """A worker that died leaves its playlist open: end it, so players stop."""
    try:
        text = path.read_text()
    except OSError:
        return
    if "#EXT-X-ENDLIST" not in text:
        path.write_text(text.rstrip("\n") + "\n#EXT-X-ENDLIST\n")
