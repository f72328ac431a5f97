"""The room server's HTTP surface besides signaling: the operator REST and the speaker page.

* ``GET /v1/rooms/{name}``, ``GET /v1/rooms/{name}/participants``: JSON for operators (404
  for a room that does not exist); they need, as ``Authorization: Bearer``, a token for that
  room (any role) or ``MIXER_ROOM_ADMIN_TOKEN`` (else 401);
* ``POST /v1/rooms/{name}/end``: ends a room, everyone leaves with ``room-ended``; needs
  ``Authorization: Bearer <MIXER_ROOM_ADMIN_TOKEN>`` (the signing secret is not accepted:
  401; no admin token set: 403);
* ``POST /v1/token``: hands out a token, only in open mode (``MIXER_ROOM_OPEN``);
* ``GET /v1/config``: what a client needs before it joins (STUN/TURN);
* ``GET /``: the speaker page (``mixer_ext/roomserver/static/``); ``GET /healthz``.

A thin adapter over the rooms owner (reads) and ``PeerHost.end_room``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from pathlib import Path

from aiohttp import web

from mixer_ext.connectors.base import Reason
from mixer_ext.iceservers import IceServers
from mixer_ext.roomserver import protocol as p
from mixer_ext.roomserver.names import for_log
from mixer_ext.roomserver.peer import PeerHost
from mixer_ext.roomserver.rooms import Room
from mixer_ext.roomserver.tokens import TokenError, mint_token, verify_token

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


class OperatorRest:
    """The handlers; ``admin_token`` is ``MIXER_ROOM_ADMIN_TOKEN`` (None: no one ends rooms)."""

    def __init__(
        self,
        host: PeerHost,
        *,
        secret: str,
        admin_token: str | None,
        open_mode: bool,
        mixer_identities: frozenset[str],
        ice: IceServers,
    ) -> None:
        self.host = host
        self.secret = secret
        self._admin_token = admin_token
        self.open_mode = open_mode
        self.mixer_identities = mixer_identities
        self.ice = ice

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/rooms/{name}", self._get_room)
        app.router.add_get("/v1/rooms/{name}/participants", self._get_participants)
        app.router.add_post("/v1/rooms/{name}/end", self._end_room)
        app.router.add_post("/v1/token", self._token)
        app.router.add_get("/v1/config", self._config)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", self._no_content)
        app.router.add_static("/static/", STATIC_DIR)

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _is_admin(self, bearer: str | None) -> bool:
        """``bearer`` is ``MIXER_ROOM_ADMIN_TOKEN`` (compared in constant time)."""
        if bearer is None or self._admin_token is None:
            return False
        return hmac.compare_digest(bearer.encode(), self._admin_token.encode())

    def _check_read(self, request: web.Request) -> None:
        """A REST read of a room needs a token for that room or the admin token (else 401)."""
        name = request.match_info["name"]
        bearer = self._bearer(request)
        if self._is_admin(bearer):
            return
        try:
            verify_token(self.secret, bearer, name)
        except TokenError as exc:
            raise web.HTTPUnauthorized(
                text=json.dumps(
                    {
                        "error": "needs Authorization: Bearer <a token for this room "
                        f"or MIXER_ROOM_ADMIN_TOKEN> ({exc})"
                    }
                ),
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="mixer-ext room server"'},
            ) from None

    def _room_or_404(self, request: web.Request) -> Room:
        room = self.host.rooms.get(request.match_info["name"])
        if room is None:
            raise web.HTTPNotFound(
                text='{"error": "no such room"}', content_type="application/json"
            )
        return room

    async def _get_room(self, request: web.Request) -> web.Response:
        self._check_read(request)
        room = self._room_or_404(request)
        return web.json_response(
            {
                "name": room.name,
                "created_at": room.created_iso(),
                "num_participants": len(room.participants),
                "max_participants": room.max_participants,
                "max_participant_duration": room.max_participant_duration,
                "empty_timeout": room.empty_timeout,
            }
        )

    async def _get_participants(self, request: web.Request) -> web.Response:
        self._check_read(request)
        room = self._room_or_404(request)
        return web.json_response(
            [p.participant_info(s).model_dump() for s in room.participants.values()]
        )

    async def _end_room(self, request: web.Request) -> web.Response:
        if self._admin_token is None:
            return web.json_response(
                {"error": "ending a room needs MIXER_ROOM_ADMIN_TOKEN set on the room server"},
                status=403,
            )
        if not self._is_admin(self._bearer(request)):
            return web.json_response(
                {"error": "needs Authorization: Bearer <MIXER_ROOM_ADMIN_TOKEN>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="mixer-ext room server"'},
            )
        room = self._room_or_404(request)
        log.info("room server: room %s ended by an operator", for_log(room.name))
        gone = await self.host.end_room(room, Reason.ROOM_ENDED)
        return web.json_response({"ended": room.name, "disconnected": gone})

    async def _token(self, request: web.Request) -> web.Response:
        if not self.open_mode:
            return web.json_response(
                {"error": "this server hands out no tokens (not in open mode)"}, status=403
            )
        try:
            body = await request.json()
            room, identity = str(body["room"]), str(body["identity"])
            if identity in self.mixer_identities:
                return web.json_response(
                    {"error": f"identity {identity[:40]!r} is reserved for the mixer"}, status=403
                )
            token = mint_token(self.secret, room, identity, ttl=6 * 3600)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        log.info("room server: open mode: token handed out for %s/%s", room, identity)
        return web.json_response({"token": token})

    async def _config(self, request: web.Request) -> web.Response:
        """What a client needs before it joins; ``iceServers`` (RTCIceServer dicts) carry TURN
        credentials only for ``?room=`` with a valid ``Authorization: Bearer`` room token."""
        identity = None
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        room = request.query.get("room", "")
        if scheme.lower() == "bearer" and bearer and room:
            try:
                identity = verify_token(self.secret, bearer.strip(), room).identity
            except TokenError:
                identity = None
        return web.json_response(
            {
                "open": self.open_mode,
                "protocol": p.PROTOCOL_VERSION,
                "iceServers": self.ice.for_client(identity, time.time()),
            }
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "rooms": len(self.host.rooms)})

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")
