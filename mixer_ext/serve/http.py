"""The worker's HTTP endpoint (aiohttp): HLS, the player page, health, live metadata.

Paths (all GET):

* ``/`` -> ``<player dir>/index.html``; the page fetches ``/config.json``,
  ``{"src": "/hls/<first HLS output>/index.m3u8", "metadataWs": "/ws/metadata",
  "lowLatency": MIXER_HLS_LOW_LATENCY}``, so it plays this worker's first HLS
  output unless opened with ``?src=`` (``lowLatency`` is informative: the page
  learns low latency from the playlist itself, ``player_demo/hls-config.js``).
  Other files of the player directory are served below ``/`` as well.
* ``/hls/<name>/index.m3u8`` (``application/vnd.apple.mpegurl``,
  ``Cache-Control: no-cache``), ``/hls/<name>/seg-NNNNNN.ts`` and the
  LL-HLS parts ``part-NNNNNN-I.ts`` (``video/mp2t``, ``public, max-age=60,
  immutable``) from ``MIXER_HLS_DIR``, served by ``hls.origin.HlsOrigin``:
  LL-HLS blocking playlist reload (``_HLS_msn``/``_HLS_part``), the hinted
  next part held until it exists, ``Access-Control-Allow-Origin`` from
  ``MIXER_HTTP_CORS_ORIGIN``.  The pipeline's HLS outputs tell the origin of
  every playlist rewrite (``notify_threadsafe``), so a held request is
  answered as soon as its part is written.
* ``/healthz``: 200 while the process runs, with the outputs' status
  (labels redacted).  ``/readyz``: 200 once the worker is in its room
  (``set_ready``) and an HLS output has its first segment (when there is
  one), else 503.
* ``/ws/metadata``: a WebSocket sending every payload's JSON as a text
  message, live: as its window closes, i.e. at the payload's timestamp on the
  mix's clock (the end of the window, issue 26), ahead of any listener of the
  stream.  At most ``MIXER_HTTP_MAX_METADATA_CLIENTS`` clients at once;
  one more is refused before the upgrade (503, a JSON ``error`` naming the
  limit).  Each client has a bounded queue (``WS_QUEUE``, oldest dropped when a
  client is slow).  The tick only hands a payload over (``publish``: O(1), no
  JSON); the ``ws-metadata-publish`` task encodes it once and queues it to every
  client, outside the tick.

Path safety: HLS names and file names must match strict patterns, player
files must resolve inside the player directory, and anything with a ``..``
or hidden segment is refused (404), whatever its percent-encoding.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from mixer_ext.core.payload import MetadataPayload
from mixer_ext.hls.origin import HlsOrigin
from mixer_ext.settings import Settings, default_player_dir
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: payloads buffered per WebSocket client (a slow client loses the oldest)
WS_QUEUE = 32
#: seconds stop() waits for open requests before closing them
SHUTDOWN_TIMEOUT = 3.0
#: at most one warning about refused metadata clients per this many seconds
REFUSAL_LOG_PERIOD = 10.0
_PLAYER_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wav": "audio/wav",
}


class PipelineView(Protocol):
    """What the endpoint needs from ``OutputPipeline``."""

    def status(self) -> dict[str, Any]: ...

    def first_segment_written(self) -> bool: ...

    def add_payload_listener(self, listener: Any) -> Any: ...

    def add_hls_listener(self, listener: Callable[[str], None]) -> Callable[[], None]: ...


class HttpEndpoint:
    """Serves one worker's HLS, player, health and metadata; owns its aiohttp runner."""

    def __init__(
        self,
        settings: Settings,
        hls_dir: Path,
        player_dir: Path | None,
        default_stream: str | None,
        pipeline: PipelineView | None = None,
    ) -> None:
        self.settings = settings
        self.hls_dir = Path(hls_dir)
        self.player_dir = Path(player_dir or settings.player_dir or default_player_dir())
        self.default_stream = default_stream
        self.pipeline = pipeline
        self.port: int | None = None
        self._ready = False
        self._runner: web.AppRunner | None = None
        self._clients: set[asyncio.Queue[str | None]] = set()
        self.max_metadata_clients = settings.http_max_metadata_clients
        self._refused = 0
        self._refused_logged_at = -REFUSAL_LOG_PERIOD
        #: payloads handed over by the tick, not yet fanned out (oldest dropped when full)
        self._outgoing: collections.deque[MetadataPayload] = collections.deque(maxlen=WS_QUEUE)
        self._outgoing_ready = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._remove_listener: Any = None
        self._remove_hls_listener: Callable[[], None] | None = None
        self.origin = HlsOrigin(self.hls_dir, cors_origin=settings.http_cors_origin)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind ``MIXER_HTTP_HOST``:``MIXER_HTTP_PORT`` (0 picks a free port: see ``.port``)."""
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/config.json", self._config)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/ws/metadata", self._ws_metadata)
        self.origin.add_routes(app, "/hls")
        app.router.add_get("/{path:.+}", self._player_file)
        app.on_shutdown.append(self._close_clients)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port or 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._publisher = asyncio.get_running_loop().create_task(
            self._publish_loop(), name="ws-metadata-publish"
        )
        if self.pipeline is not None:
            self._remove_listener = self.pipeline.add_payload_listener(self.publish)
            self._remove_hls_listener = self.pipeline.add_hls_listener(
                self.origin.notify_threadsafe
            )

    async def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._remove_hls_listener is not None:
            self._remove_hls_listener()
            self._remove_hls_listener = None
        await stop_tasks([self._publisher], logger=log)
        self._publisher = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def set_ready(self, ready: bool) -> None:
        """The worker says whether it is in its room (``/readyz``)."""
        self._ready = ready

    def publish(self, payload: MetadataPayload) -> None:
        """Hand ``payload`` to the publisher task (called in the tick: O(1), never blocks)."""
        if self._publisher is None or not self._clients:
            return
        self._outgoing.append(payload)  # a full deque drops its oldest
        self._outgoing_ready.set()

    async def _publish_loop(self) -> None:
        """Encode each payload once and queue it to every client (``ws-metadata-publish``)."""
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while self._outgoing:
                text = self._outgoing.popleft().to_json()
                for q in list(self._clients):
                    if q.full():
                        with contextlib.suppress(asyncio.QueueEmpty):
                            q.get_nowait()  # drop the oldest for a slow client
                    q.put_nowait(text)

    # ------------------------------------------------------------------ handlers
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._file(self.player_dir / "index.html", "text/html", no_cache=True)

    async def _config(self, request: web.Request) -> web.Response:
        src = f"/hls/{self.default_stream}/index.m3u8" if self.default_stream else None
        return web.json_response(
            {
                "src": src,
                "metadataWs": "/ws/metadata",
                "lowLatency": self.settings.hls_low_latency,
            },
            headers={"Cache-Control": "no-cache"},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        outputs = self.pipeline.status() if self.pipeline is not None else {}
        return web.json_response({"status": "ok", "ready": self._is_ready(), **outputs})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self._is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    def _is_ready(self) -> bool:
        if not self._ready:
            return False
        if self.pipeline is None or self.default_stream is None:
            return True
        return self.pipeline.first_segment_written()

    async def _player_file(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
            raise web.HTTPNotFound()
        root = self.player_dir.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise web.HTTPNotFound()
        ctype = _PLAYER_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return self._file(path, ctype)

    def _file(self, path: Path, content_type: str, *, no_cache: bool = False) -> web.StreamResponse:
        if not path.is_file():
            raise web.HTTPNotFound()
        headers = {"Content-Type": content_type}
        if no_cache:
            headers["Cache-Control"] = "no-cache"
        return web.FileResponse(path, headers=headers)

    async def _ws_metadata(self, request: web.Request) -> web.StreamResponse:
        # timeout: how long close() waits for the client's close reply (bounded shutdown)
        if len(self._clients) >= self.max_metadata_clients:
            self._refused += 1
            now = time.monotonic()
            if now - self._refused_logged_at >= REFUSAL_LOG_PERIOD:  # a rush is not a log flood
                self._refused_logged_at = now
                log.warning(
                    "metadata socket: %d client(s) refused, %d connected "
                    "(MIXER_HTTP_MAX_METADATA_CLIENTS)",
                    self._refused,
                    len(self._clients),
                )
                self._refused = 0
            return web.json_response(
                {
                    "error": f"too many metadata clients: at most {self.max_metadata_clients} "
                    "(MIXER_HTTP_MAX_METADATA_CLIENTS)"
                },
                status=503,
                headers={"Retry-After": "5"},
            )
        ws = web.WebSocketResponse(heartbeat=30.0, timeout=1.0)
        q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=WS_QUEUE)
        self._clients.add(q)  # counted before the first await: the cap holds under a rush
        reader: asyncio.Task[None] | None = None
        try:
            await ws.prepare(request)
            reader = asyncio.get_running_loop().create_task(
                self._drain(ws, q), name="ws-metadata-read"
            )
            while True:
                text = await q.get()
                if text is None or ws.closed:
                    break
                await ws.send_str(text)
        except ConnectionResetError:
            pass
        finally:
            self._clients.discard(q)
            await stop_tasks([reader], logger=log)
            await ws.close()
        return ws

    @staticmethod
    async def _drain(ws: web.WebSocketResponse, q: asyncio.Queue[str | None]) -> None:
        """Read (and ignore) client messages so close frames are seen; wake the sender on close."""
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        with contextlib.suppress(asyncio.QueueFull):
            q.put_nowait(None)

    async def _close_clients(self, app: web.Application) -> None:
        for q in list(self._clients):
            while q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(None)
