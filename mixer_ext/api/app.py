"""``mixer-ext api``: the Media v1 REST resources over aiohttp, and the streams they launch.

The handlers only translate: a request into ``resources`` parsing and ``store`` calls, a
state machine step's effects into store writes, launcher calls and queued callbacks.

Routes:

- ``/v1/MediaProcessors``, ``/v1/PlayerStreamers``, ``/v1/PlayerStreamers/{Sid}/PlaybackGrant``,
  ``/v1/MediaRecordings`` (+ ``/Media``): HTTP Basic (account SID + auth token, or an API
  key SID + secret), as the official ``twilio`` client sends it;
- ``/hls/{VJ}/index.m3u8?token=GRANT``: the ``playbackUrl`` of a PlaybackGrant; answers a
  multivariant playlist whose media playlist URI carries a *session* token, which covers
  the media playlist and its segments until the stream ends;
- ``/v1/PlayerStreamers/{Sid}/TimedMetadata``: an app's timed metadata, queued for the
  worker of the streamer's running processor (``timedmeta``);
- ``/internal/workers/{ZX}/status?key=…``: where each worker's status reporter posts
  (``MIXER_STATUS_CALLBACK_URL``), keyed per processor; ``…/metadata?key=…`` beside it:
  the worker's long poll for app metadata;
- ``/healthz``.

Why one module of ~1000 lines: these are the aiohttp handlers of every resource, thin
translations of requests into ``resources`` calls and results into responses, plus the
playback gate; the rules are sans-I/O in ``resources``, persistence in ``store``, the
workers in ``launcher``/``kube``, delivery in ``callbacks``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import logging
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp import web

from mixer_ext import eventloop
from mixer_ext.api import resources as r
from mixer_ext.api import timedmeta as tm
from mixer_ext.api.callbacks import CallbackDispatcher
from mixer_ext.api.client import basic_authorization
from mixer_ext.api.config import ApiSettings, LauncherKind, load_api_settings
from mixer_ext.api.kube import JobTemplate, KubeJobs, KubernetesLauncher
from mixer_ext.api.launcher import LocalLauncher, WorkerLauncher
from mixer_ext.api.signing import (
    GRANT,
    SESSION,
    TokenRefused,
    check_playback_token,
    mint_playback_token,
    playback_key,
)
from mixer_ext.api.store import Store
from mixer_ext.context import parse_context
from mixer_ext.errors import ConfigError
from mixer_ext.llhls.origin import HlsOrigin
from mixer_ext.settings import Settings, default_player_dir
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)
R = TypeVar("R", r.MediaProcessor, r.PlayerStreamer)

#: how often the API checks workers and maximum durations (seconds)
WATCH_PERIOD = 0.5
#: a session token outlives its stream's longest possible life by this much (seconds)
SESSION_GRACE = 120
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
            and sid not in self.store.stopping_workers()
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
                    r.MediaRecording(
                        sid=r.new_sid(r.RECORDING_PREFIX),
                        account_sid=p.account_sid,
                        processor_sid=p.sid,
                        source_sid=r.room_source_sid(ctx.room.name),
                        status=r.RecordingStatus.PROCESSING,
                        path=str(path),
                        format=spec.path.suffix.lstrip(".").lower(),
                        duration=None,
                        media_size=None,
                        date_created=p.date_created,
                        date_updated=p.date_created,
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
        recs, _ = self.store.recordings(processor_sid=p.sid, limit=100)
        for rec in recs:
            if rec.status is not r.RecordingStatus.PROCESSING:
                continue
            path = Path(rec.path)
            ok = path.is_file() and path.stat().st_size > 0
            self.store.save_recording(
                r.MediaRecording(
                    **{
                        **rec.__dict__,
                        "status": r.RecordingStatus.COMPLETED if ok else r.RecordingStatus.FAILED,
                        "media_size": path.stat().st_size if ok else None,
                        "duration": round(p.date_updated - p.date_created),
                        "date_updated": time.time(),
                    }
                )
            )


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


# --------------------------------------------------------------------------- HTTP
PLANE: web.AppKey[ControlPlane] = web.AppKey("plane", ControlPlane)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error(err: r.ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except r.ApiError as err:
        return _error(err)


def _authorized(plane: ControlPlane, header: str | None) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    if user == plane.cfg.account_sid:
        expected = plane.auth_token
    elif user in plane.keys:
        expected = plane.keys[user]
    else:
        return False
    return hmac.compare_digest(password.encode(), expected.encode())


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/v1/") and not _authorized(
        request.app[PLANE], request.headers.get("Authorization")
    ):
        response = _error(r.unauthorized())
        response.headers["WWW-Authenticate"] = 'Basic realm="mixer-ext"'
        return response
    result: web.StreamResponse = await handler(request)
    return result


async def _form(request: web.Request) -> dict[str, str]:
    if request.method == "GET":
        return dict(request.query)
    data = await request.post()
    return {k: str(v) for k, v in data.items()}


def _resource_path(request: web.Request) -> str:
    return request.path.removeprefix("/v1")


# ----------------------------------------------------------------- MediaProcessors
async def create_processor(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    req = r.parse_processor_create(await _form(request))
    for i, out in enumerate(req.context.outputs):
        if r.is_sid(r.STREAMER_PREFIX, out):
            s = plane.store.streamer(out)
            if s is None:
                raise r.bad_request(
                    f"ExtensionContext: outputs[{i}]: PlayerStreamer {out} not found"
                )
            if s.status not in r.ACTIVE_STREAMER:
                raise r.bad_request(
                    f"ExtensionContext: outputs[{i}]: PlayerStreamer {out} is {s.status.value}"
                )
            if any(out in p.streamer_sids() for p in plane.store.active_processors()):
                raise r.bad_request(
                    f"ExtensionContext: outputs[{i}]: PlayerStreamer {out} already has an "
                    "active MediaProcessor"
                )
    if plane.store.count_active_processors() >= plane.cfg.api_max_processors:
        raise r.too_many(
            f"Too many active MediaProcessors (at most {plane.cfg.api_max_processors}, "
            "MIXER_API_MAX_PROCESSORS); end one first"
        )
    now = time.time()
    p = r.MediaProcessor(
        sid=r.new_sid(r.PROCESSOR_PREFIX),
        account_sid=plane.cfg.account_sid,
        extension=req.extension,
        extension_context=req.extension_context,
        status=r.ProcessorStatus.STARTED,
        ended_reason=None,
        error_message=None,
        status_callback=req.status_callback,
        status_callback_method=req.status_callback_method,
        max_duration=req.max_duration,
        date_created=now,
        date_updated=now,
    )
    plane.store.insert_processor(p)
    plane.launch(p)
    current = plane.store.processor(p.sid) or p
    return _json(r.render_processor(current, plane.public_url), 201)


# ----------------------------------------------------------------- PlayerStreamers
async def create_streamer(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    req = r.parse_streamer_create(await _form(request))
    now = time.time()
    s = r.PlayerStreamer(
        sid=r.new_sid(r.STREAMER_PREFIX),
        account_sid=plane.cfg.account_sid,
        video=req.video,
        status=r.StreamerStatus.CREATED,
        ended_reason=None,
        status_callback=req.status_callback,
        status_callback_method=req.status_callback_method,
        max_duration=req.max_duration,
        date_created=now,
        date_updated=now,
    )
    plane.store.insert_streamer(s)
    return _json(r.render_streamer(s, plane.public_url), 201)


# ----------------------------------------------------------------- fetch, end, list
@dataclass(frozen=True)
class _Collection(Generic[R]):
    """What tells MediaProcessors and PlayerStreamers apart in their fetch, update
    (``Status=ended``) and list handlers, which are otherwise the same."""

    path: str
    #: the list page's key (``media_processors``)
    key: str
    statuses: tuple[str, ...]
    fetch: Callable[[Store, str], R | None]
    page: Callable[..., tuple[list[R], r.PageKey | None]]
    render: Callable[[R, str], dict[str, Any]]
    #: the state machine's step for an ``update(status="ended")``
    end: Callable[[ControlPlane, str], None]

    def get_or_404(self, request: web.Request) -> R:
        found = self.fetch(request.app[PLANE].store, request.match_info["sid"])
        if found is None:
            raise r.not_found(_resource_path(request))
        return found

    async def fetch_handler(self, request: web.Request) -> web.Response:
        return _json(self.render(self.get_or_404(request), request.app[PLANE].public_url))

    async def update_handler(self, request: web.Request) -> web.Response:
        plane = request.app[PLANE]
        sid = request.match_info["sid"]
        before = self.get_or_404(request)
        r.parse_end_update(await _form(request))
        self.end(plane, sid)
        return _json(self.render(self.fetch(plane.store, sid) or before, plane.public_url))

    async def list_handler(self, request: web.Request) -> web.Response:
        plane = request.app[PLANE]
        form = await _form(request)
        status = r.parse_status_filter(form, list(self.statuses))
        page = r.parse_page(form)
        rows, nxt = self.page(
            plane.store,
            status=status,
            order=r.parse_order(form),
            after=page.after,
            limit=page.page_size,
        )
        return _json(
            r.render_page(
                key=self.key,
                public_url=plane.public_url,
                path=self.path,
                filters={"Status": status, "Order": form.get("Order")},
                request=page,
                records=[self.render(row, plane.public_url) for row in rows],
                next_key=nxt,
            )
        )


PROCESSORS = _Collection(
    path="MediaProcessors",
    key="media_processors",
    statuses=tuple(s.value for s in r.ProcessorStatus),
    fetch=Store.processor,
    page=Store.processors,
    render=r.render_processor,
    end=lambda plane, sid: plane.processor_event(sid, r.ProcessorEvent.END_REQUESTED),
)
STREAMERS = _Collection(
    path="PlayerStreamers",
    key="player_streamers",
    statuses=tuple(s.value for s in r.StreamerStatus),
    fetch=Store.streamer,
    page=Store.streamers,
    render=r.render_streamer,
    end=lambda plane, sid: plane.streamer_event(sid, r.StreamerEvent.END_REQUESTED),
)


# ----------------------------------------------------------------- PlaybackGrants
async def create_grant(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    s = STREAMERS.get_or_404(request)
    req = r.parse_grant_create(await _form(request))
    if s.status not in r.ACTIVE_STREAMER:
        raise r.bad_request(f"PlayerStreamer {s.sid} is {s.status.value}: nothing to play")
    now = time.time()
    token = mint_playback_token(plane.playback_key, s.sid, GRANT, req.allow_origin, now + req.ttl)
    url = f"{plane.public_url}/hls/{s.sid}/index.m3u8?token={quote(token)}"
    return _json(r.render_grant(s.sid, plane.cfg.account_sid, url, plane.public_url, now), 201)


# ----------------------------------------------------------------- TimedMetadata
async def post_timed_metadata(request: web.Request) -> web.Response:
    """An app's string into the live stream, now, beside the mixer's own payloads."""
    plane = request.app[PLANE]
    s = STREAMERS.get_or_404(request)
    text = tm.parse_timed_metadata(await _form(request))
    if s.status is not r.StreamerStatus.STARTED:
        raise tm.not_streaming(s.sid, f"is {s.status.value}")
    p = plane.running_processor(s.sid)
    if p is None:
        raise tm.not_streaming(s.sid, "has no running MediaProcessor")
    try:
        plane.post_app_metadata(p.sid, text)
    except tm.QueueFull:
        raise tm.queue_full(s.sid) from None
    body = tm.render_timed_metadata(s.sid, s.account_sid, text, plane.public_url, time.time())
    return _json(body, 201)


async def fetch_grant(request: web.Request) -> web.Response:
    STREAMERS.get_or_404(request)
    raise r.ApiError(405, r.CODE_METHOD, "Fetching a PlaybackGrant is not enabled; create one")


# ----------------------------------------------------------------- MediaRecordings
def _recording_or_404(request: web.Request) -> r.MediaRecording:
    rec = request.app[PLANE].store.recording(request.match_info["sid"])
    if rec is None:
        raise r.not_found(_resource_path(request))
    return rec


async def list_recordings(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    form = await _form(request)
    status = r.parse_status_filter(form, [s.value for s in r.RecordingStatus])
    order = r.parse_order(form)
    page = r.parse_page(form)
    processor_sid = form.get("ProcessorSid") or None
    source_sid = form.get("SourceSid") or None
    rows, nxt = plane.store.recordings(
        status=status,
        processor_sid=processor_sid,
        source_sid=source_sid,
        order=order,
        after=page.after,
        limit=page.page_size,
    )
    return _json(
        r.render_page(
            key="media_recordings",
            public_url=plane.public_url,
            path="MediaRecordings",
            filters={
                "Status": status,
                "ProcessorSid": processor_sid,
                "SourceSid": source_sid,
                "Order": form.get("Order"),
            },
            request=page,
            records=[r.render_recording(x, plane.public_url) for x in rows],
            next_key=nxt,
        )
    )


async def fetch_recording(request: web.Request) -> web.Response:
    return _json(r.render_recording(_recording_or_404(request), request.app[PLANE].public_url))


async def delete_recording(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    rec = _recording_or_404(request)
    if rec.status is r.RecordingStatus.PROCESSING:
        raise r.ApiError(409, 20409, f"MediaRecording {rec.sid} is still being written")
    await asyncio.to_thread(Path(rec.path).unlink, missing_ok=True)
    plane.store.delete_recording(rec.sid)
    return web.Response(status=204)


async def recording_media(request: web.Request) -> web.StreamResponse:
    rec = _recording_or_404(request)
    path = Path(rec.path)
    if rec.status is not r.RecordingStatus.COMPLETED or not await asyncio.to_thread(path.is_file):
        raise r.ApiError(404, r.CODE_NOT_FOUND, f"MediaRecording {rec.sid} has no media yet")
    return web.FileResponse(
        path, headers={"Content-Disposition": f'attachment; filename="{rec.sid}.{rec.format}"'}
    )


# ----------------------------------------------------------------- playback
async def play(request: web.Request) -> web.StreamResponse:
    """``/hls/{VJ}/{file}``: the grant's URL, then the stream under its session credential.

    ``index.m3u8?token=GRANT`` answers a multivariant playlist whose media playlist URI is
    ``index.m3u8?session=SESSION``; that playlist (with LL-HLS blocking reload, from the
    LL-HLS origin) and every segment or part it names carry the session token.
    """
    plane = request.app[PLANE]
    sid, file = request.match_info["name"], request.match_info["file"]
    s = plane.store.streamer(sid) if r.is_sid(r.STREAMER_PREFIX, sid) else None
    if s is None:
        return _forbidden("unknown stream")
    now = time.time()
    if file == "index.m3u8" and "session" not in request.query:
        try:
            claims = check_playback_token(
                plane.playback_key, request.query.get("token"), sid, (GRANT,), now
            )
        except TokenRefused as exc:
            return _forbidden(str(exc))
        expires = s.date_created + s.max_duration + SESSION_GRACE
        session = mint_playback_token(plane.playback_key, sid, SESSION, claims.origin, expires)
        body = (
            "#EXTM3U\n#EXT-X-VERSION:3\n"
            '#EXT-X-STREAM-INF:BANDWIDTH=160000,CODECS="mp4a.40.2"\n'
            f"index.m3u8?session={quote(session)}\n"
        )
        return _cors(
            web.Response(text=body, content_type="application/vnd.apple.mpegurl"), claims.origin
        )
    try:
        claims = check_playback_token(
            plane.playback_key, request.query.get("session"), sid, (SESSION,), now
        )
    except TokenRefused as exc:
        return _forbidden(str(exc))
    base = plane.stream_base(sid)
    response: web.StreamResponse
    try:
        if base is not None:
            passed = {k: v for k, v in request.query.items() if k not in ("session", "token")}
            response = await plane.proxy(f"{base}/hls/{sid}/{file}", passed)
        else:
            response = await plane.origin.handle(request)
    except web.HTTPException as exc:
        return _cors(web.Response(status=exc.status, text=exc.text), claims.origin)
    if file == "index.m3u8" and response.status == 200 and isinstance(response, web.Response):
        session = quote(request.query["session"])
        text = (response.body or b"").decode() if isinstance(response.body, bytes) else ""
        body = "\n".join(_with_session(line, session) for line in text.splitlines()) + "\n"
        rewritten = web.Response(text=body, content_type="application/vnd.apple.mpegurl")
        rewritten.headers["Cache-Control"] = "no-cache"
        return _cors(rewritten, claims.origin)
    _cors(response, claims.origin)
    if file != "index.m3u8":
        response.headers["Cache-Control"] = "private, max-age=60"
    return response


def _cors(response: web.StreamResponse, origin: str | None) -> web.StreamResponse:
    response.headers["Access-Control-Allow-Origin"] = origin or "*"
    if origin:
        response.headers["Vary"] = "Origin"
    response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _forbidden(why: str) -> web.Response:
    return web.Response(status=403, text=f"403 Forbidden: {why}\n")


def _with_session(line: str, session: str) -> str:
    if line.startswith("#"):
        return re.sub(r'URI="([^"?]+)"', lambda m: f'URI="{m.group(1)}?session={session}"', line)
    return f"{line}?session={session}" if line.strip() else line


# ----------------------------------------------------------------- internal
async def worker_status(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    sid = request.match_info["sid"]
    if not hmac.compare_digest(request.query.get("key", ""), plane.worker_key(sid)):
        return web.Response(status=403)
    body = await request.json()
    state = body.get("state")
    events = {
        "started": r.ProcessorEvent.WORKER_STARTED,
        "ended": r.ProcessorEvent.WORKER_ENDED,
        "failed": r.ProcessorEvent.WORKER_FAILED,
    }
    if state in events:
        plane.processor_event(sid, events[state], body.get("reason"), body.get("detail"))
    return web.Response(status=204)


async def worker_metadata(request: web.Request) -> web.Response:
    """The worker's long poll: app metadata after ``after`` (acknowledging up to it).

    Answers at once when something waits, else after ``wait`` seconds (at most
    ``tm.MAX_WAIT``) with nothing; 410 once the processor is finished (the worker stops
    asking).
    """
    plane = request.app[PLANE]
    sid = request.match_info["sid"]
    if not hmac.compare_digest(request.query.get("key", ""), plane.worker_key(sid)):
        return web.Response(status=403)
    deadline = time.monotonic() + tm.parse_wait(request.query)
    while True:
        p = plane.store.processor(sid)
        if p is None or p.status is not r.ProcessorStatus.STARTED:
            return web.Response(status=410)
        queue = plane.app_metadata.get(sid)
        if queue is not None:
            # ``after`` counts in the queue the worker last heard from (not an earlier
            # API process's): otherwise it has seen nothing of this one
            same = request.query.get("queue") == queue.id
            after = tm.parse_after(request.query) if same else 0
            queue.ack(after)
            items = queue.pending(after)
            if items:
                return _json(
                    {
                        "queue": queue.id,
                        "items": [{"seq": m.seq, "metadata": m.text} for m in items],
                    }
                )
        left = deadline - time.monotonic()
        if left <= 0 or plane.closing.is_set():
            return _json({"items": []})
        event = plane.app_metadata_event(sid)
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), left)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(plane: ControlPlane, player_dir: Path | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth], client_max_size=256 * 1024)
    app[PLANE] = plane
    add = app.router.add_route
    add("POST", "/v1/MediaProcessors", create_processor)
    add("POST", "/v1/PlayerStreamers", create_streamer)
    for c in (PROCESSORS, STREAMERS):
        add("GET", f"/v1/{c.path}", c.list_handler)
        add("GET", f"/v1/{c.path}/{{sid}}", c.fetch_handler)
        add("POST", f"/v1/{c.path}/{{sid}}", c.update_handler)
    add("POST", "/v1/PlayerStreamers/{sid}/PlaybackGrant", create_grant)
    add("GET", "/v1/PlayerStreamers/{sid}/PlaybackGrant", fetch_grant)
    add("POST", "/v1/PlayerStreamers/{sid}/TimedMetadata", post_timed_metadata)
    add("GET", "/v1/MediaRecordings", list_recordings)
    add("GET", "/v1/MediaRecordings/{sid}", fetch_recording)
    add("DELETE", "/v1/MediaRecordings/{sid}", delete_recording)
    add("GET", "/v1/MediaRecordings/{sid}/Media", recording_media)
    add("GET", "/hls/{name}/{file}", play)
    app.on_shutdown.append(lambda _app: plane.origin.close())
    add("POST", "/internal/workers/{sid}/status", worker_status)
    add("GET", "/internal/workers/{sid}/metadata", worker_metadata)

    async def closing(_app: web.Application) -> None:
        plane.close_polls()

    app.on_shutdown.append(closing)
    add("GET", "/healthz", healthz)
    # the player page: /player/?token=<player access token> or ?src=<playbackUrl>
    root = (player_dir or default_player_dir()).resolve()
    if (root / "index.html").is_file():

        async def player_page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(root / "index.html", headers={"Cache-Control": "no-cache"})

        async def player_redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(
                "/player/" + (f"?{request.query_string}" if request.query_string else "")
            )

        add("GET", "/player", player_redirect)
        add("GET", "/player/", player_page)
        app.router.add_static("/player/", root)

    async def not_found_json(request: web.Request) -> web.Response:
        raise r.not_found(_resource_path(request))

    app.router.add_route("*", "/v1/{tail:.*}", not_found_json)
    return app


# --------------------------------------------------------------------------- CLI
HELP = """\
Serve the Media v1 REST API that the official twilio Python client (9.0.x) speaks:
MediaProcessors, PlayerStreamers, PlaybackGrants and MediaRecordings under /v1/.
A backend that launched the hosted audio-mixer extension keeps its code and changes
one line, client.media.base_url. Each MediaProcessor runs as a `mixer-ext run`
worker (a child process, or a Kubernetes Job); its HLS is served by this API
under /hls/ (proxied from the pod with Jobs), to players holding a PlaybackGrant.

Stopping the API leaves the workers running; the next start adopts them again
(a worker that died meanwhile is marked failed).
"""

EPILOG = """\
settings (environment):
  MIXER_AUTH_TOKEN          required; HTTP Basic password, and the key that signs
                            status callbacks (X-Twilio-Signature) and grants
  MIXER_ACCOUNT_SID         AC + 32 hex; the Basic user name (default AC000…0)
  MIXER_API_KEYS            optional SK…:secret pairs, comma-separated
  MIXER_API_PUBLIC_URL      base of every URL handed out (default http://HOST:PORT)
  MIXER_API_DATA_DIR        streams, recordings, private files (./mixer-api-data)
  MIXER_API_DATABASE        the SQLite state (default DATA_DIR/api.db)
  MIXER_API_MAX_PROCESSORS  active processors at once; more get 429 (default 10)
  MIXER_API_LAUNCHER        local (default: child processes) or kubernetes (Jobs)
  MIXER_API_INTERNAL_URL    where workers report status (kubernetes: required)
  MIXER_API_KUBE_NAMESPACE, MIXER_API_KUBE_IMAGE, MIXER_API_KUBE_ROOM_SECRET
                            kubernetes: the Jobs' namespace, image, room Secret
  MIXER_API_KUBE_RESOURCES, _GRACE_SECONDS, _TTL_SECONDS, _DATA_SIZE_LIMIT,
  _IMAGE_PULL_POLICY, _POD_SPEC, _ROOM_TOKEN_SOURCE
                            kubernetes: the rest of the Jobs' pod (the Helm chart
                            sets them from its worker values; README "Settings")
  workers inherit the room settings (MIXER_ROOM_URL, MIXER_ROOM_BACKEND,
  MIXER_ROOM_SECRET, ...) from this environment (kubernetes: no credential as
  plain env; a Job's worker gets a token minted for its room, not the secret).

example:
  MIXER_AUTH_TOKEN=secret mixer-ext api --host 127.0.0.1 --port 8080

  from twilio.rest import Client
  client = Client("AC" + "0" * 32, "secret")
  client.media.base_url = "http://127.0.0.1:8080"   # the only change
  ps = client.media.v1.player_streamer.create(max_duration=3600)
  mp = client.media.v1.media_processor.create(
      extension="audio-mixer-v1",
      extension_context='{"room": {"name": "RM1"}, "outputs": ["%s"]}' % ps.sid)
  grant = client.media.v1.player_streamer(ps.sid).playback_grant().create(ttl=60)
  client.media.v1.media_processor(mp.sid).update(status="ended")

See the README, section "The Media v1 API", for what is and is not compatible.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")


async def serve(
    cfg: ApiSettings,
    host: str,
    port: int,
    player_dir: Path | None = None,
    room_rest: str | None = None,
) -> None:
    plane = ControlPlane(cfg, host, port, room_rest=room_rest)
    runner = web.AppRunner(build_app(plane, player_dir), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await plane.start()
    log.info("api listening on http://%s:%d (public URL %s)", host, port, plane.public_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await plane.stop()


def main(args: argparse.Namespace, settings: Settings) -> int:
    cfg = load_api_settings()
    room_rest = r.room_rest_base(settings.room_backend.value, settings.room_url)
    eventloop.run(
        serve(cfg, args.host, args.port, settings.player_dir, room_rest), settings.event_loop
    )
    return 0
