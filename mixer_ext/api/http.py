"""The aiohttp plumbing every API route shares: the plane's app key, Twilio-shaped JSON
errors, HTTP Basic (account SID + auth token, or an API key), and form reading."""

from __future__ import annotations

import base64
import hmac
import logging
from typing import Any

from aiohttp import web

from mixer_ext.api import resources as r
from mixer_ext.api.plane import ControlPlane

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- HTTP
PLANE: web.AppKey[ControlPlane] = web.AppKey("plane", ControlPlane)


def json_body(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def error_body(err: r.ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except r.ApiError as err:
        return error_body(err)


def authorized(plane: ControlPlane, header: str | None) -> bool:
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
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/v1/") and not authorized(
        request.app[PLANE], request.headers.get("Authorization")
    ):
        response = error_body(r.unauthorized())
        response.headers["WWW-Authenticate"] = 'Basic realm="mixer-ext"'
        return response
    result: web.StreamResponse = await handler(request)
    return result


async def read_form(request: web.Request) -> dict[str, str]:
    if request.method == "GET":
        return dict(request.query)
    data = await request.post()
    return {k: str(v) for k, v in data.items()}


def resource_path(request: web.Request) -> str:
    return request.path.removeprefix("/v1")
