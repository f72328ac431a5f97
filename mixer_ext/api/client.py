"""A small async client for the Media v1 API: the requests the official ``twilio`` client
sends (form-encoded POST, HTTP Basic), for the project's own tools (the demo) that should
take the users' path without depending on the twilio library.
"""

from __future__ import annotations

import base64
import json
from types import TracebackType
from typing import Any

import aiohttp


class MediaApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('message', body)}")
        self.status = status
        self.body = body


def basic_authorization(username: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value (RFC 7617, UTF-8), as the twilio client sends.

    aiohttp 3.14 deprecates its ``BasicAuth`` and the ``auth=`` parameter (gone in 4.0),
    and its replacement does not exist in older 3.x; the header is one line of base64.
    """
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class MediaApiClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._authorization = basic_authorization(username, password)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MediaApiClient:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": self._authorization},
            timeout=aiohttp.ClientTimeout(total=15),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("use 'async with MediaApiClient(...)'")
        url = f"{self.base_url}/v1/{path}"
        async with self._session.request(method, url, data=form or {}) as resp:
            try:
                body = await resp.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                body = {"message": (await resp.text())[:200]}
            if resp.status >= 300:
                raise MediaApiError(resp.status, body)
            return dict(body)

    async def create_player_streamer(self, **form: str) -> dict[str, Any]:
        return await self._call("POST", "PlayerStreamers", {"Video": "false", **form})

    async def create_media_processor(
        self, extension: str, context: dict[str, Any], **form: str
    ) -> dict[str, Any]:
        fields = {"Extension": extension, "ExtensionContext": json.dumps(context), **form}
        return await self._call("POST", "MediaProcessors", fields)

    async def fetch_media_processor(self, sid: str) -> dict[str, Any]:
        return await self._call("GET", f"MediaProcessors/{sid}")

    async def fetch_player_streamer(self, sid: str) -> dict[str, Any]:
        return await self._call("GET", f"PlayerStreamers/{sid}")

    async def end_media_processor(self, sid: str) -> dict[str, Any]:
        return await self._call("POST", f"MediaProcessors/{sid}", {"Status": "ended"})

    async def create_playback_grant(self, streamer_sid: str, ttl: int = 60) -> dict[str, Any]:
        return await self._call(
            "POST", f"PlayerStreamers/{streamer_sid}/PlaybackGrant", {"Ttl": str(ttl)}
        )
