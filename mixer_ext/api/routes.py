"""The Media v1 routes over aiohttp: each handler only translates.

A request becomes ``resources`` parsing and rule calls, ``store`` reads and a call of the
``ControlPlane`` (``plane``); the result becomes a response. Routes:

- ``/v1/MediaProcessors``, ``/v1/PlayerStreamers``, ``/v1/PlayerStreamers/{Sid}/PlaybackGrant``
  (``playback``), ``/v1/MediaRecordings`` (+ ``/Media``): HTTP Basic (account SID + auth
  token, or an API key SID + secret), as the official ``twilio`` client sends it;
- ``/hls/{VJ}/...``: the playback gate (``playback``);
- ``/v1/PlayerStreamers/{Sid}/TimedMetadata``: an app's timed metadata, queued for the
  worker of the streamer's running processor (``timedmeta``);
- ``/internal/workers/{ZX}/status?key=…``: where each worker's status reporter posts
  (``MIXER_STATUS_CALLBACK_URL``), keyed per processor; ``…/metadata?key=…`` beside it:
  the worker's long poll for app metadata;
- ``/healthz``, and the player page under ``/player/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiohttp import web

from mixer_ext.api import playback
from mixer_ext.api import resources as r
from mixer_ext.api import timedmeta as tm
from mixer_ext.api.http import (
    PLANE,
    auth_middleware,
    errors_middleware,
    json_body,
    read_form,
    resource_path,
)
from mixer_ext.api.plane import ControlPlane
from mixer_ext.api.store import Store
from mixer_ext.settings import default_player_dir

log = logging.getLogger(__name__)
R = TypeVar("R", r.MediaProcessor, r.PlayerStreamer)


# ----------------------------------------------------------------- MediaProcessors
async def create_processor(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    req = r.parse_processor_create(await read_form(request))
    outputs = req.context.outputs
    wanted = [out for out in outputs if r.is_sid(r.STREAMER_PREFIX, out)]
    if wanted:
        busy = {vj for p in plane.store.active_processors() for vj in p.streamer_sids()}
        r.check_streamer_outputs(outputs, {vj: plane.store.streamer(vj) for vj in wanted}, busy)
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
    return json_body(r.render_processor(current, plane.public_url), 201)


# ----------------------------------------------------------------- PlayerStreamers
async def create_streamer(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    req = r.parse_streamer_create(await read_form(request))
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
    return json_body(r.render_streamer(s, plane.public_url), 201)


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
            raise r.not_found(resource_path(request))
        return found

    async def fetch_handler(self, request: web.Request) -> web.Response:
        return json_body(self.render(self.get_or_404(request), request.app[PLANE].public_url))

    async def update_handler(self, request: web.Request) -> web.Response:
        plane = request.app[PLANE]
        sid = request.match_info["sid"]
        before = self.get_or_404(request)
        r.parse_end_update(await read_form(request))
        self.end(plane, sid)
        return json_body(self.render(self.fetch(plane.store, sid) or before, plane.public_url))

    async def list_handler(self, request: web.Request) -> web.Response:
        plane = request.app[PLANE]
        form = await read_form(request)
        status = r.parse_status_filter(form, list(self.statuses))
        page = r.parse_page(form)
        rows, nxt = self.page(
            plane.store,
            status=status,
            order=r.parse_order(form),
            after=page.after,
            limit=page.page_size,
        )
        return json_body(
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


# ----------------------------------------------------------------- TimedMetadata
async def post_timed_metadata(request: web.Request) -> web.Response:
    """An app's string into the live stream, now, beside the mixer's own payloads."""
    plane = request.app[PLANE]
    s = STREAMERS.get_or_404(request)
    text = tm.parse_timed_metadata(await read_form(request))
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
    return json_body(body, 201)


# ----------------------------------------------------------------- MediaRecordings
def _recording_or_404(request: web.Request) -> r.MediaRecording:
    rec = request.app[PLANE].store.recording(request.match_info["sid"])
    if rec is None:
        raise r.not_found(resource_path(request))
    return rec


async def list_recordings(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    form = await read_form(request)
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
    return json_body(
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
    return json_body(r.render_recording(_recording_or_404(request), request.app[PLANE].public_url))


async def delete_recording(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    rec = _recording_or_404(request)
    r.recording_step(rec, r.RecordingEvent.DELETE_REQUESTED, time.time())
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
                return json_body(
                    {
                        "queue": queue.id,
                        "items": [{"seq": m.seq, "metadata": m.text} for m in items],
                    }
                )
        left = deadline - time.monotonic()
        if left <= 0 or plane.closing.is_set():
            return json_body({"items": []})
        event = plane.app_metadata_event(sid)
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), left)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(plane: ControlPlane, player_dir: Path | None = None) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=256 * 1024
    )
    app[PLANE] = plane
    add = app.router.add_route
    add("POST", "/v1/MediaProcessors", create_processor)
    add("POST", "/v1/PlayerStreamers", create_streamer)
    for c in (PROCESSORS, STREAMERS):
        add("GET", f"/v1/{c.path}", c.list_handler)
        add("GET", f"/v1/{c.path}/{{sid}}", c.fetch_handler)
        add("POST", f"/v1/{c.path}/{{sid}}", c.update_handler)
    add("POST", "/v1/PlayerStreamers/{sid}/PlaybackGrant", playback.create_grant)
    add("GET", "/v1/PlayerStreamers/{sid}/PlaybackGrant", playback.fetch_grant)
    add("POST", "/v1/PlayerStreamers/{sid}/TimedMetadata", post_timed_metadata)
    add("GET", "/v1/MediaRecordings", list_recordings)
    add("GET", "/v1/MediaRecordings/{sid}", fetch_recording)
    add("DELETE", "/v1/MediaRecordings/{sid}", delete_recording)
    add("GET", "/v1/MediaRecordings/{sid}/Media", recording_media)
    add("GET", "/hls/{name}/{file}", playback.play)
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
        raise r.not_found(resource_path(request))

    app.router.add_route("*", "/v1/{tail:.*}", not_found_json)
    return app
