"""Pick and build the room connector the settings ask for."""

from __future__ import annotations

import time

from pydantic import SecretStr

from mixer_ext.connectors.base import RoomConnector
from mixer_ext.errors import ConfigError
from mixer_ext.settings import RoomBackend, Settings

#: how long a bot token minted from MIXER_ROOM_SECRET is valid: the longest run plus margin
BOT_TOKEN_TTL = 86_400 + 3_600


def read_room_token_file(settings: Settings) -> Settings:
    """``settings`` with ``room_token`` read from ``MIXER_ROOM_TOKEN_FILE``, if that is set.

    Read once, at start: a restarted container reads the same file again (the chart's
    in-memory volume outlives a container restart), so it re-joins with the same token.
    The token itself is never in an error message or a log line.
    """
    path = settings.room_token_file
    if path is None:
        return settings
    if settings.room_token is not None:
        raise ConfigError("set MIXER_ROOM_TOKEN or MIXER_ROOM_TOKEN_FILE, not both")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"MIXER_ROOM_TOKEN_FILE: cannot read {str(path)[:200]!r}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"MIXER_ROOM_TOKEN_FILE: {str(path)[:200]!r} is not text") from None
    if not token:
        raise ConfigError(f"MIXER_ROOM_TOKEN_FILE: {str(path)[:200]!r} is empty")
    if any(c.isspace() for c in token):
        raise ConfigError(f"MIXER_ROOM_TOKEN_FILE: {str(path)[:200]!r} holds more than one token")
    return settings.model_copy(update={"room_token": SecretStr(token), "room_token_file": None})


def check_room_settings(settings: Settings) -> None:
    """Refuse, before connecting, settings that cannot work (one line each)."""
    if settings.room_backend is RoomBackend.EMBEDDED:
        if (
            settings.room_token is None
            and settings.room_token_file is None
            and settings.room_secret is None
        ):
            raise ConfigError(
                "MIXER_ROOM_TOKEN, MIXER_ROOM_TOKEN_FILE or MIXER_ROOM_SECRET must be set "
                "to join the embedded room server"
            )
        if not settings.room_url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"MIXER_ROOM_URL: must start with ws:// or wss://, got {settings.room_url!r}"
            )
    elif not settings.janus_url.startswith(("ws://", "wss://")):
        raise ConfigError(
            f"MIXER_JANUS_URL: must start with ws:// or wss://, got {settings.janus_url!r}"
        )


def make_connector(
    settings: Settings, room: str, identity: str, *, tap: bool = True
) -> RoomConnector:
    """A fresh, unconnected connector for ``room`` as ``identity``.

    ``tap`` False: tracks deliver decoded frames through stock aiortc (``track.recv()``)
    instead of encoded payloads (``TrackSubscribed.source``); benchmarks compare the two.
    """
    if settings.room_backend is RoomBackend.JANUS:
        from mixer_ext.connectors.janus import JanusRoomConnector

        return JanusRoomConnector(
            settings.janus_url,
            room,
            identity,
            api_secret=settings.janus_api_secret.get_secret_value()
            if settings.janus_api_secret
            else None,
            token=settings.janus_token.get_secret_value() if settings.janus_token else None,
            tap=tap,
        )
    from aiortc import RTCIceServer

    from mixer_ext.connectors.embedded import EmbeddedRoomConnector
    from mixer_ext.iceservers import IceServers
    from mixer_ext.roomserver.limits import ROLE_MIXER
    from mixer_ext.roomserver.tokens import mint_token

    settings = read_room_token_file(settings)  # a no-op once the runner's main() read it
    if settings.room_token is not None:
        token = settings.room_token.get_secret_value()
    else:
        if settings.room_secret is None:  # check_room_settings() refuses this earlier
            raise ConfigError("MIXER_ROOM_TOKEN or MIXER_ROOM_SECRET is required")
        token = mint_token(
            settings.room_secret.get_secret_value(), room, identity, BOT_TOKEN_TTL, role=ROLE_MIXER
        )
    # STUN/TURN for the mixer's own peer connection (MIXER_ICE_*), as its clients get them
    ice = IceServers.from_settings(settings).for_client(identity, time.time())
    servers = [
        RTCIceServer(urls=i["urls"], username=i.get("username"), credential=i.get("credential"))
        for i in ice
    ]
    return EmbeddedRoomConnector(
        settings.room_url, room, identity, token, tap=tap, ice_servers=servers
    )
