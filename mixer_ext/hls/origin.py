"""An HLS origin with LL-HLS blocking playlist reload, for any directory of HLS streams.

``HlsOrigin(root)`` serves ``<prefix>/<name>/index.m3u8`` and the segments
and parts beside it from ``root/<name>/``.  It knows nothing of the worker:
the worker mounts it in its HTTP endpoint and tells it when it rewrote a
playlist (``notify()``, from any thread with ``notify_threadsafe()``); the
control plane can mount the same class over a directory other processes
write, and then it notices changes by polling the playlist's ``stat()``
(every ``poll_interval`` seconds, only while requests are held).

Per stream, per change of the playlist, the origin reads the file once,
parses it once (``playlist.parse_media_playlist``, in a thread when it
is large) and keeps the bytes: every request gets the same bytes, and the
delta update (``_HLS_skip``) is rendered at most once per change.

Blocking reload (``blocking.py`` has the rules): one ``asyncio.Event`` per
awaited (MSN, part), shared by every request awaiting it and set when a
change reaches it; a request held ``3 x TARGETDURATION`` gets 503.  Held
requests are bounded per client address (``max_held_per_client``, 429 past
it) and in total (``max_held_total``, 503 past it), so a client cannot pin
the server's memory or sockets.

A GET of the hinted next part (``EXT-X-PRELOAD-HINT``) before it exists is
held the same way and answered with the whole part once it is complete
(parts are renamed into place whole); other missing files are 404.

Headers: playlists ``Cache-Control: no-cache``; parts and segments
``public, max-age=60, immutable`` (written once under a name never reused
within a run); ``Access-Control-Allow-Origin`` when ``cors_origin`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from mixer_ext.hls.blocking import (
    Directives,
    Reject,
    Wait,
    decide,
    hold_limit,
    is_ready,
    parse_directives,
)
from mixer_ext.hls.playlist import (
    MediaPlaylist,
    PlaylistSyntaxError,
    Position,
    parse_media_playlist,
)
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

PLAYLIST_NAME = "index.m3u8"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
PLAYLIST_CACHE = "no-cache"
MEDIA_CACHE = "public, max-age=60, immutable"
#: playlists larger than this are parsed off the event loop
PARSE_INLINE_BYTES = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MEDIA = re.compile(r"^(seg-\d{6,}|part-\d{6,}-\d{1,4})\.ts$")


@dataclass
class _Stream:
    name: str
    path: Path
    stat_key: tuple[int, int, int] | None = None
    body: bytes | None = None
    playlist: MediaPlaylist | None = None
    position: Position | None = None
    skip_body: bytes | None = None
    #: one event per awaited (msn, part); part None = the whole segment
    waiters: dict[tuple[int, int | None], asyncio.Event] = field(default_factory=dict)
    #: set (and replaced) on every change: wakes hinted-part requests
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    poller: asyncio.Task[None] | None = None
    #: set by notify(): refresh now instead of at the next poll
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)


class HlsOrigin:
    """Serves HLS streams under ``root`` with LL-HLS blocking reload (see module doc)."""

    def __init__(
        self,
        root: Path,
        *,
        cors_origin: str | None = None,
        max_held_total: int = 1024,
        max_held_per_client: int = 16,
        poll_interval: float = 0.02,
    ) -> None:
        self.root = Path(root)
        self.cors_origin = cors_origin
        self.max_held_total = max_held_total
        self.max_held_per_client = max_held_per_client
        self.poll_interval = poll_interval
        self._streams: dict[str, _Stream] = {}
        self._held_by_client: Counter[str] = Counter()
        self._held_total = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ wiring
    def add_routes(self, app: web.Application, prefix: str = "/hls") -> None:
        app.router.add_get(prefix + "/{name}/{file}", self.handle)
        app.on_shutdown.append(self._on_shutdown)

    def notify(self, name: str) -> None:
        """The playlist of ``name`` changed (call on the event loop thread)."""
        stream = self._streams.get(name)
        if stream is not None and stream.held:
            stream.kick.set()

    def notify_threadsafe(self, name: str) -> None:
        """``notify()`` from any thread (e.g. the HLS output's); no-op before the first request."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(self.notify, name)

    async def close(self) -> None:
        """Answer every held request (503) and stop the pollers."""
        self._closing = True
        for stream in self._streams.values():
            self._wake_all(stream)
            if stream.poller is not None:
                await stop_tasks([stream.poller])
                stream.poller = None

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    # ------------------------------------------------------------------ requests
    async def handle(self, request: web.Request) -> web.StreamResponse:
        self._loop = asyncio.get_running_loop()
        name, file = request.match_info["name"], request.match_info["file"]
        if not _NAME.match(name) or ".." in name:
            raise web.HTTPNotFound()
        if file == PLAYLIST_NAME:
            return await self._playlist(request, name)
        if _MEDIA.match(file):
            return await self._media(request, name, file)
        raise web.HTTPNotFound()

    async def _playlist(self, request: web.Request, name: str) -> web.StreamResponse:
        got = parse_directives(request.query)
        if isinstance(got, Reject):
            return self._reject(got)
        stream = self._stream(name)
        await self._refresh(stream)
        if stream.position is None or stream.body is None:
            raise web.HTTPNotFound(headers=self._cors())
        decision = decide(got, stream.position)
        if isinstance(decision, Reject):
            return self._reject(decision)
        if isinstance(decision, Wait):
            refused = self._admit(request)
            if refused is not None:
                return refused
            try:
                ok = await self._wait(stream, decision)
            finally:
                self._release(request)
            if not ok:
                return self._text(503, "the playlist did not reach the requested part in time")
        skip = isinstance(got, Directives) and got.skip
        body = self._skip_body(stream) if skip else stream.body
        if body is None:  # an invariant of this class
            raise RuntimeError("internal: body not set")
        return web.Response(body=body, headers=self._headers(PLAYLIST_TYPE, PLAYLIST_CACHE))

    async def _media(self, request: web.Request, name: str, file: str) -> web.StreamResponse:
        path = self.root / name / file
        if not _is_file(path):
            stream = self._stream(name)
            await self._refresh(stream)
            pos = stream.position
            if pos is None or pos.preload_hint != file:
                raise web.HTTPNotFound(headers=self._cors())
            refused = self._admit(request)
            if refused is not None:
                return refused
            try:
                ok = await self._wait_for_file(stream, path, hold_limit(pos))
            finally:
                self._release(request)
            if not ok:
                return self._text(503, "the hinted part was not written in time")
        return web.FileResponse(path, headers=self._headers(SEGMENT_TYPE, MEDIA_CACHE))

    # ------------------------------------------------------------------ waiting
    async def _wait(self, stream: _Stream, w: Wait) -> bool:
        if stream.position is None:  # an invariant of this class
            raise RuntimeError("internal: stream.position not set")
        key = (w.msn, w.part)
        event = stream.waiters.get(key)
        if event is None:
            event = stream.waiters[key] = asyncio.Event()
        stream.held += 1
        self._ensure_poller(stream)
        try:
            async with asyncio.timeout(hold_limit(stream.position)):
                await event.wait()
        except TimeoutError:
            return False
        finally:
            stream.held -= 1
            if not stream.held:
                stream.waiters.clear()
        if self._closing:
            return False
        pos = stream.position
        return pos is not None and is_ready(w.msn, w.part, pos)

    async def _wait_for_file(self, stream: _Stream, path: Path, limit: float) -> bool:
        stream.held += 1
        self._ensure_poller(stream)
        try:
            async with asyncio.timeout(limit):
                while not _is_file(path):
                    if self._closing:
                        return False
                    await stream.changed.wait()
        except TimeoutError:
            return False
        finally:
            stream.held -= 1
        return not self._closing

    def _ensure_poller(self, stream: _Stream) -> None:
        if stream.poller is None or stream.poller.done():
            stream.poller = asyncio.get_running_loop().create_task(
                self._poll(stream), name=f"hls-origin-poll:{stream.name}"
            )

    async def _poll(self, stream: _Stream) -> None:
        """Re-stat the playlist while requests are held (catches writers in other processes)."""
        while stream.held and not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await stream.kick.wait()
            stream.kick.clear()
            try:
                await self._refresh(stream)
            except Exception:  # top level of the poller: keep serving
                log.exception("hls origin: cannot refresh %s", stream.name)

    # ------------------------------------------------------------------ state
    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(name, self.root / name / PLAYLIST_NAME)
        return stream

    async def _refresh(self, stream: _Stream) -> None:
        async with stream.refreshing:
            try:
                st = os.stat(stream.path)
            except OSError:
                return  # not written yet (or gone): keep what we have
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if key == stream.stat_key:
                return
            try:
                if st.st_size > PARSE_INLINE_BYTES:
                    body, playlist = await asyncio.to_thread(_load, stream.path)
                else:
                    body, playlist = _load(stream.path)
            except (OSError, PlaylistSyntaxError) as exc:
                # a half-written file from a writer that does not rename: retry on the next poll
                log.debug("hls origin: %s unreadable for now: %s", stream.path, exc)
                return
            stream.stat_key, stream.body, stream.playlist = key, body, playlist
            stream.position = playlist.position()
            stream.skip_body = None
            self._wake_ready(stream)

    def _wake_ready(self, stream: _Stream) -> None:
        pos = stream.position
        if pos is None:  # an invariant of this class
            raise RuntimeError("internal: pos not set")
        for key in [k for k in stream.waiters if is_ready(k[0], k[1], pos)]:
            stream.waiters.pop(key).set()
        stream.changed.set()
        stream.changed = asyncio.Event()

    def _wake_all(self, stream: _Stream) -> None:
        for event in stream.waiters.values():
            event.set()
        stream.waiters.clear()
        stream.changed.set()

    def _skip_body(self, stream: _Stream) -> bytes:
        if stream.skip_body is None:
            if stream.playlist is None:  # an invariant of this class
                raise RuntimeError("internal: stream.playlist not set")
            stream.skip_body = stream.playlist.render(skip=True).encode()
        return stream.skip_body

    # ------------------------------------------------------------------ limits and headers
    def _admit(self, request: web.Request) -> web.Response | None:
        client = request.remote or "?"
        if self._held_total >= self.max_held_total:
            return self._text(503, "too many held requests")
        if self._held_by_client[client] >= self.max_held_per_client:
            return self._text(429, "too many held requests from this client")
        self._held_total += 1
        self._held_by_client[client] += 1
        return None

    def _release(self, request: web.Request) -> None:
        client = request.remote or "?"
        self._held_total -= 1
        self._held_by_client[client] -= 1
        if self._held_by_client[client] <= 0:
            del self._held_by_client[client]

    def _cors(self) -> dict[str, str]:
        if not self.cors_origin:
            return {}
        headers = {"Access-Control-Allow-Origin": self.cors_origin}
        if self.cors_origin != "*":
            headers["Vary"] = "Origin"
        return headers

    def _headers(self, content_type: str, cache: str) -> dict[str, str]:
        return {"Content-Type": content_type, "Cache-Control": cache, **self._cors()}

    def _text(self, status: int, text: str) -> web.Response:
        return web.Response(
            status=status, text=text + "\n", headers={"Cache-Control": "no-store", **self._cors()}
        )

    def _reject(self, r: Reject) -> web.Response:
        return self._text(r.status, r.reason)


def _load(path: Path) -> tuple[bytes, MediaPlaylist]:
    body = path.read_bytes()
    return body, parse_media_playlist(body.decode())


def _is_file(path: Path) -> bool:
    """A stat of a local file (microseconds: fine on the event loop)."""
    return path.is_file()
