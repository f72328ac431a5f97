"""Synthetic participant: joins the embedded room and plays a tone or a sound file.

``mixer-ext talker --room R --identity I (--tone HZ | --wav FILE) [--level L]
[--duration S] [--mute-at S] [--unmute-at S] [--leave-at S] [--token T]``

Times are seconds after joining.  Without ``--duration``/``--leave-at`` it
stays until SIGINT/SIGTERM.  Exits 0 when it left as planned; 1 when the
server disconnected it early (the reason is logged); 2 for bad arguments or a
refused join.  The demo, tests and benchmarks use ``Talker`` in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from aiortc.mediastreams import MediaStreamTrack

from mixer_ext.connectors.base import Disconnected, RoomConnectError
from mixer_ext.connectors.embedded import RoomClient
from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.names import check_name
from mixer_ext.roomserver.tokens import mint_token, secret_from
from mixer_ext.settings import Settings
from mixer_ext.sim.tracks import ToneTrack, WavTrack
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When to mute, unmute and leave, in seconds after joining (``None`` = never)."""

    mute_at: float | None = None
    unmute_at: float | None = None
    leave_at: float | None = None

    def steps(self) -> list[tuple[float, str]]:
        pairs = ((self.mute_at, "mute"), (self.unmute_at, "unmute"))
        return sorted((t, what) for t, what in pairs if t is not None)


class Talker:
    """A participant publishing ``track`` into ``room`` on schedule.

    ``run()`` joins, follows the schedule and returns the reason it left
    (``left`` when it left by itself, else the server's reason).  It owns the
    ``RoomClient`` and closes it on the way out, cancelled or not.
    """

    def __init__(
        self,
        url: str,
        room: str,
        identity: str,
        token: str,
        track: MediaStreamTrack,
        schedule: Schedule = Schedule(),
        *,
        auto_subscribe: bool = False,
    ) -> None:
        self.client = RoomClient(
            url, room, identity, token, publish=track, auto_subscribe=auto_subscribe
        )
        self.identity = identity
        self.schedule = schedule
        self.joined = asyncio.Event()

    async def run(self) -> str:
        await self.client.connect()
        self.joined.set()
        start = time.monotonic()
        drain = asyncio.create_task(self._drain(), name=f"talker-events:{self.identity}")
        try:
            for at, what in self.schedule.steps():
                if not await self._sleep_until(start + at, drain):
                    return self.client.disconnect_reason or "connection-lost"
                log.info("talker %s: %s at %.1f s", self.identity, what, at)
                await self.client.set_enabled(what == "unmute")
            if self.schedule.leave_at is not None:
                if not await self._sleep_until(start + self.schedule.leave_at, drain):
                    return self.client.disconnect_reason or "connection-lost"
            else:
                await asyncio.shield(drain)
                return self.client.disconnect_reason or "connection-lost"
            log.info("talker %s: leaving", self.identity)
            return "left"
        finally:
            await self.client.disconnect()
            await stop_tasks([drain], logger=log)

    async def _sleep_until(self, when: float, drain: asyncio.Task[None]) -> bool:
        """Sleep to ``when``; False if the session ended first."""
        delay = max(0.0, when - time.monotonic())
        done, _ = await asyncio.wait({drain}, timeout=delay)
        return not done

    async def _drain(self) -> None:
        """Consume events (a talker does not act on them) until Disconnected."""
        async for event in self.client.events():
            if isinstance(event, Disconnected):
                log.info("talker %s: disconnected: %s", self.identity, event.reason)


# --- CLI ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--room", required=True)
    parser.add_argument("--identity", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tone", type=float, metavar="HZ", help="play a sine of HZ Hz")
    source.add_argument("--wav", type=Path, metavar="FILE", help="play FILE (looped)")
    parser.add_argument("--level", type=float, default=0.3, help="tone amplitude 0..1 (0.3)")
    parser.add_argument("--duration", type=float, help="seconds, then leave (same as --leave-at)")
    parser.add_argument("--mute-at", type=float, help="seconds after joining")
    parser.add_argument("--unmute-at", type=float, help="seconds after joining")
    parser.add_argument("--leave-at", type=float, help="seconds after joining")
    parser.add_argument("--token", help="access token (default: minted from MIXER_ROOM_SECRET)")
    parser.add_argument(
        "--subscribe", action="store_true", help="also receive the others' audio (off: saves CPU)"
    )


def _schedule(args: argparse.Namespace) -> Schedule:
    for name in ("duration", "mute_at", "unmute_at", "leave_at"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0 seconds")
    leave = [v for v in (args.duration, args.leave_at) if v is not None]
    if args.unmute_at is not None and args.mute_at is None:
        raise ConfigError("--unmute-at needs --mute-at")
    if args.unmute_at is not None and args.unmute_at <= args.mute_at:
        raise ConfigError("--unmute-at must be after --mute-at")
    return Schedule(args.mute_at, args.unmute_at, min(leave) if leave else None)


def main(args: argparse.Namespace, settings: Settings) -> int:
    try:
        check_name("room", args.room)
        check_name("identity", args.identity)
        track: MediaStreamTrack
        if args.wav is not None:
            if not args.wav.is_file():
                raise ConfigError(f"--wav: {args.wav} is not a file")
            track = WavTrack(args.wav)
        else:
            track = ToneTrack(args.tone, args.level)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    schedule = _schedule(args)
    token = args.token or mint_token(
        secret_from(settings, "minting the talker's token (or pass --token)"),
        args.room,
        args.identity,
        ttl=max(3600.0, (schedule.leave_at or 0) + 60),
    )
    talker = Talker(
        settings.room_url,
        args.room,
        args.identity,
        token,
        track,
        schedule,
        auto_subscribe=args.subscribe,
    )
    return asyncio.run(_run(talker))


async def _run(talker: Talker) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(talker.run(), name=f"talker:{talker.identity}")
    stopped = False

    def _stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop)
    try:
        reason = await task
    except asyncio.CancelledError:
        if stopped:
            return 0
        raise
    except RoomConnectError as exc:
        raise ConfigError(str(exc)) from None
    if reason == "left":
        return 0
    log.warning("talker %s: disconnected early: %s", talker.identity, reason)
    return 1
