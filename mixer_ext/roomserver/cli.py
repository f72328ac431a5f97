"""``mixer-ext room-server``: the embedded room server (``server.RoomServer``) until a signal."""

from __future__ import annotations

import argparse
import asyncio
import signal

from pydantic import ValidationError

from mixer_ext import eventloop
from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.server import DEFAULT_PORT, RoomServer
from mixer_ext.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 7880)")
    parser.add_argument("--max-participants", type=int, help="override MIXER_ROOM_MAX_PARTICIPANTS")
    parser.add_argument(
        "--max-participant-duration",
        type=float,
        help="seconds; override MIXER_ROOM_MAX_PARTICIPANT_DURATION",
    )
    parser.add_argument(
        "--empty-timeout", type=float, help="seconds; override MIXER_ROOM_EMPTY_TIMEOUT"
    )
    parser.add_argument(
        "--open",
        action="store_true",
        default=None,
        help="hand out tokens to anyone (trusted demos only); same as MIXER_ROOM_OPEN=true",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: {args.port} is not a port number")
    if args.max_participants is not None and args.max_participants < 1:
        raise ConfigError("--max-participants: must be at least 1")
    if args.max_participant_duration is not None and not 0 < args.max_participant_duration <= 86400:
        raise ConfigError("--max-participant-duration: must be in (0, 86400] seconds")
    if args.empty_timeout is not None and args.empty_timeout < 0:
        raise ConfigError("--empty-timeout: must be >= 0 seconds")
    try:
        server = RoomServer(
            settings,
            args.host,
            args.port,
            max_participants=args.max_participants,
            max_participant_duration=args.max_participant_duration,
            empty_timeout=args.empty_timeout,
            open_mode=args.open,
        )
    except ValidationError as exc:  # pragma: no cover - settings already validated
        raise ConfigError(str(exc).splitlines()[0]) from None
    return eventloop.run(_serve(server), settings.event_loop)


async def _serve(server: RoomServer) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {server.host}:{server.port}: {exc.strerror}") from None
    print(f"room server listening on {server.url}", flush=True)
    await stop.wait()
    await server.stop()
    return 0
