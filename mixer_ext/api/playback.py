"""The playback gate: a PlaybackGrant, then the stream under a session token.

``POST /v1/PlayerStreamers/{VJ}/PlaybackGrant`` mints a short-lived *grant* token in the
``playbackUrl``; ``/hls/{VJ}/index.m3u8?token=GRANT`` answers a multivariant playlist whose
media playlist URI carries a *session* token, which covers the media playlist (rewritten so
every URI it names carries the session too) and its segments until the stream ends. The
stream comes from the LL-HLS origin over the API's data directory, or is proxied from the
worker's own endpoint (Kubernetes Jobs).
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote

from aiohttp import web

from mixer_ext.api import resources as r
from mixer_ext.api.http import PLANE, json_body, read_form, resource_path
from mixer_ext.api.signing import (
    GRANT,
    SESSION,
    TokenRefused,
    check_playback_token,
    mint_playback_token,
)

log = logging.getLogger(__name__)

#: a session token outlives its stream's longest possible life by this much (seconds)
SESSION_GRACE = 120


def _streamer_or_404(request: web.Request) -> r.PlayerStreamer:
    s = request.app[PLANE].store.streamer(request.match_info["sid"])
    if s is None:
        raise r.not_found(resource_path(request))
    return s


# ----------------------------------------------------------------- PlaybackGrants
async def create_grant(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    s = _streamer_or_404(request)
    req = r.parse_grant_create(await read_form(request))
    if s.status not in r.ACTIVE_STREAMER:
        raise r.bad_request(f"PlayerStreamer {s.sid} is {s.status.value}: nothing to play")
    now = time.time()
    token = mint_playback_token(plane.playback_key, s.sid, GRANT, req.allow_origin, now + req.ttl)
    url = f"{plane.public_url}/hls/{s.sid}/index.m3u8?token={quote(token)}"
    return json_body(r.render_grant(s.sid, plane.cfg.account_sid, url, plane.public_url, now), 201)


async def fetch_grant(request: web.Request) -> web.Response:
    _streamer_or_404(request)
    raise r.ApiError(405, r.CODE_METHOD, "Fetching a PlaybackGrant is not enabled; create one")


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
