"""aiohttp handlers of Recordings, Compositions and CompositionHooks (``media_rest`` formats).

Thin: each handler parses with ``media_rest``, calls ``MediaService`` and renders.  Auth
is the Video REST's own (HTTP Basic, ``authenticate(user, password)``; else 401/20003).  ``…/Media``
answers as Twilio did: ``302`` to a temporary signed URL (``Location``) with the same URL
as ``{"redirect_to": …}`` in the body (the official client does not follow redirects;
Twilio's documentation reads that field).  The signed URL is served at ``/media/{key}``
without other credentials, until it expires (``MediaUrlSigner``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from mixer_ext.roomserver.recording_rules import RoomRecorder
from mixer_ext.roomserver.recordings import MediaService
from mixer_ext.roomserver.rooms import Room
from mixer_ext.roomserver.storage import MediaUrlSigner
from mixer_ext.roomserver.twilio import media_rest as m
from mixer_ext.roomserver.twilio.rest import RestError, page

Handler = Callable[[web.Request], Awaitable[tuple[int, Any]]]


class MediaRoutes:
    def __init__(
        self,
        service: MediaService,
        signer: MediaUrlSigner,
        authenticate: Callable[[str, str], bool],
        *,
        recorder: RoomRecorder | None = None,
        find_room: Callable[[str], Room | None] | None = None,
    ) -> None:
        self.service = service
        self.signer = signer
        self._check_credentials = authenticate
        self.recorder = recorder
        self._find_room = find_room

    def _authenticate(self, request: web.Request) -> None:
        """HTTP Basic, checked as the Video REST checks it (``authenticate(user, password)``)."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user = password = ""
        if scheme.lower() != "basic" or not self._check_credentials(user, password):
            raise RestError(401, 20003, "Authenticate")

    def add_routes(self, app: web.Application) -> None:
        get, post, delete = app.router.add_get, app.router.add_post, app.router.add_delete
        w = self._wrap
        get("/v1/Recordings", w(self.list_recordings))
        get("/v1/Recordings/{sid}", w(self.fetch_recording))
        delete("/v1/Recordings/{sid}", w(self.delete_recording))
        get("/v1/Recordings/{sid}/Media", self._media(self.recording_media))
        get("/v1/Rooms/{room}/Recordings", w(self.list_room_recordings))
        get("/v1/Rooms/{room}/Recordings/{sid}", w(self.fetch_room_recording))
        delete("/v1/Rooms/{room}/Recordings/{sid}", w(self.delete_room_recording))
        get("/v1/Rooms/{room}/Recordings/{sid}/Media", self._media(self.room_recording_media))
        post("/v1/Compositions", w(self.create_composition))
        get("/v1/Compositions", w(self.list_compositions))
        get("/v1/Compositions/{sid}", w(self.fetch_composition))
        delete("/v1/Compositions/{sid}", w(self.delete_composition))
        get("/v1/Compositions/{sid}/Media", self._media(self.composition_media))
        get("/v1/Compositions/{sid}/Levels", self._media(self.composition_levels))
        post("/v1/CompositionHooks", w(self.create_hook))
        get("/v1/CompositionHooks", w(self.list_hooks))
        get("/v1/CompositionHooks/{sid}", w(self.fetch_hook))
        post("/v1/CompositionHooks/{sid}", w(self.update_hook))
        delete("/v1/CompositionHooks/{sid}", w(self.delete_hook))
        for settings in ("RecordingSettings/Default", "CompositionSettings/Default"):
            get(f"/v1/{settings}", w(self.settings))
            post(f"/v1/{settings}", w(self.settings))
        get("/v1/Rooms/{room}/RecordingRules", w(self.fetch_rules))
        post("/v1/Rooms/{room}/RecordingRules", w(self.update_rules))
        get("/media/{key:.+}", self.serve_media)

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                self._authenticate(request)
                status, body = await handler(request)
            except RestError as exc:
                return web.json_response(exc.render(), status=exc.status)
            if status == 204:
                return web.Response(status=204)
            return web.json_response(body, status=status)

        return wrapped

    def _media(
        self, find: Callable[[web.Request], tuple[str, str]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                self._authenticate(request)
                status, key = find(request)
                if status != "completed":
                    raise RestError(404, 20404, f"no media: the resource is {status}")
            except RestError as exc:
                return web.json_response(exc.render(), status=exc.status)
            expires, signature = self.signer.sign(key)
            query = urlencode({"Expires": expires, "Signature": signature})
            url = f"{_base(request)}/media/{key}?{query}"
            return web.json_response({"redirect_to": url}, status=302, headers={"Location": url})

        return wrapped

    async def serve_media(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        why = self.signer.verify(
            key, request.query.get("Expires", ""), request.query.get("Signature", "")
        )
        if why:
            return web.json_response({"message": why}, status=403)
        path = self.service.store.readable(key)
        if path is None:
            return web.json_response({"message": "media not found"}, status=404)
        return web.FileResponse(path)

    # --- Recordings ---------------------------------------------------------------------------
    def _recordings(self, request: web.Request, room_sid: str | None) -> list[m.RecordingRecord]:
        q = request.query
        window = m.parse_created_window(q)
        groups = q.getall("GroupingSid", [])
        status = q.get("Status")
        if status is not None and status not in m.RECORDING_STATUSES:
            raise RestError(400, m.INVALID_PARAMETER, "Status is not a recording status")
        media_type = q.get("MediaType")
        return [
            rec
            for rec in reversed(self.service.recordings.values())
            if (room_sid is None or rec.room_sid == room_sid)
            and status in (None, rec.status)
            and q.get("SourceSid") in (None, rec.source_sid)
            and all(g in (rec.room_sid, rec.participant_sid) for g in groups)
            and media_type in (None, "audio")
            and m.created_in(rec.created, window)
        ]

    async def list_recordings(self, request: web.Request) -> tuple[int, Any]:
        base = _base(request)
        items = [
            m.render_recording(rec, base, room_scoped=False)
            for rec in self._recordings(request, None)
        ]
        query = _query(request)
        return 200, page(items, "recordings", base=base, path="/v1/Recordings", query=query)

    async def list_room_recordings(self, request: web.Request) -> tuple[int, Any]:
        room = request.match_info["room"]
        base = _base(request)
        items = [
            m.render_recording(rec, base, room_scoped=True)
            for rec in self._recordings(request, room)
        ]
        path = f"/v1/Rooms/{room}/Recordings"
        return 200, page(items, "recordings", base=base, path=path, query=_query(request))

    async def fetch_recording(self, request: web.Request) -> tuple[int, Any]:
        rec = self.service.recording(request.match_info["sid"])
        return 200, m.render_recording(rec, _base(request), room_scoped=False)

    async def fetch_room_recording(self, request: web.Request) -> tuple[int, Any]:
        rec = self.service.recording(request.match_info["sid"], request.match_info["room"])
        return 200, m.render_recording(rec, _base(request), room_scoped=True)

    async def delete_recording(self, request: web.Request) -> tuple[int, Any]:
        self.service.delete_recording(request.match_info["sid"])
        return 204, None

    async def delete_room_recording(self, request: web.Request) -> tuple[int, Any]:
        self.service.delete_recording(request.match_info["sid"], request.match_info["room"])
        return 204, None

    def recording_media(self, request: web.Request) -> tuple[str, str]:
        rec = self.service.recording(request.match_info["sid"])
        return rec.status, rec.key

    def room_recording_media(self, request: web.Request) -> tuple[str, str]:
        rec = self.service.recording(request.match_info["sid"], request.match_info["room"])
        return rec.status, rec.key

    # --- Compositions -------------------------------------------------------------------------
    async def create_composition(self, request: web.Request) -> tuple[int, Any]:
        spec = m.parse_composition_create(await _form(request))
        if spec.room_sid not in {r.room_sid for r in self.service.recordings.values()}:
            raise RestError(
                404, 20404, f"The requested resource /Rooms/{spec.room_sid[:40]} has no recordings"
            )
        record = self.service.create_composition(spec)
        return 201, m.render_composition(record, _base(request))

    async def list_compositions(self, request: web.Request) -> tuple[int, Any]:
        q = request.query
        window = m.parse_created_window(q)
        status = q.get("Status")
        if status is not None and status not in m.COMPOSITION_STATUSES:
            raise RestError(400, m.INVALID_PARAMETER, "Status is not a composition status")
        base = _base(request)
        items = [
            m.render_composition(c, base)
            for c in reversed(self.service.compositions.values())
            if status in (None, c.status)
            and q.get("RoomSid") in (None, c.room_sid)
            and m.created_in(c.created, window)
        ]
        query = _query(request)
        return 200, page(items, "compositions", base=base, path="/v1/Compositions", query=query)

    async def fetch_composition(self, request: web.Request) -> tuple[int, Any]:
        c = self.service.composition(request.match_info["sid"])
        return 200, m.render_composition(c, _base(request))

    async def delete_composition(self, request: web.Request) -> tuple[int, Any]:
        self.service.delete_composition(request.match_info["sid"])
        return 204, None

    def composition_media(self, request: web.Request) -> tuple[str, str]:
        c = self.service.composition(request.match_info["sid"])
        return c.status, c.key

    def composition_levels(self, request: web.Request) -> tuple[str, str]:
        c = self.service.composition(request.match_info["sid"])
        return c.status, m.levels_key(c)

    # --- CompositionHooks ---------------------------------------------------------------------
    async def create_hook(self, request: web.Request) -> tuple[int, Any]:
        hook = self.service.create_hook(m.parse_hook(await _form(request)))
        return 201, m.render_hook(hook, _base(request))

    async def list_hooks(self, request: web.Request) -> tuple[int, Any]:
        q = request.query
        window = m.parse_created_window(q)
        enabled = q.get("Enabled")
        base = _base(request)
        items = [
            m.render_hook(h, base)
            for h in reversed(self.service.hooks.values())
            if enabled in (None, str(h.enabled).lower())
            and q.get("FriendlyName") in (None, h.friendly_name)
            and m.created_in(h.created, window)
        ]
        query = _query(request)
        return 200, page(
            items, "composition_hooks", base=base, path="/v1/CompositionHooks", query=query
        )

    async def fetch_hook(self, request: web.Request) -> tuple[int, Any]:
        return 200, m.render_hook(self.service.hook(request.match_info["sid"]), _base(request))

    async def update_hook(self, request: web.Request) -> tuple[int, Any]:
        sid = request.match_info["sid"]
        fields = m.parse_hook(await _form(request), self.service.hook(sid))
        return 200, m.render_hook(self.service.update_hook(sid, fields), _base(request))

    async def delete_hook(self, request: web.Request) -> tuple[int, Any]:
        self.service.delete_hook(request.match_info["sid"])
        return 204, None

    # --- RecordingRules ---------------------------------------------------------------------
    def _live_room(self, request: web.Request) -> tuple[RoomRecorder, Room]:
        key = request.match_info["room"]
        room = self._find_room(key) if self._find_room is not None else None
        if self.recorder is None or room is None:
            raise RestError(404, 20404, f"The requested resource /Rooms/{key[:40]} was not found")
        return self.recorder, room

    async def fetch_rules(self, request: web.Request) -> tuple[int, Any]:
        recorder, room = self._live_room(request)
        return 200, m.render_rules(room.sid, *recorder.rules(room))

    async def update_rules(self, request: web.Request) -> tuple[int, Any]:
        recorder, room = self._live_room(request)
        recorder.update_rules(room, m.parse_recording_rules(await _form(request)))
        return 200, m.render_rules(room.sid, *recorder.rules(room))

    async def settings(self, request: web.Request) -> tuple[int, Any]:
        raise RestError(
            400,
            m.NOT_SUPPORTED,
            "Recording and Composition Settings (encryption, external storage) are not "
            "supported by this server: media stays in MIXER_RECORDINGS_DIR",
        )


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _query(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if k != "GroupingSid"}


async def _form(request: web.Request) -> dict[str, list[str]]:
    data = await request.post()
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        out.setdefault(k, []).append(str(v))
    return out
