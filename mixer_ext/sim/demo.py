"""``mixer-ext demo`` (what ``make demo`` runs): the whole product on one machine.

* the embedded room server (a subprocess, open mode, bound to loopback),
* three talkers with different tones, in this process: ``alice`` talks all
  the time, ``bob`` mutes and unmutes every few seconds, ``carol`` leaves
  and comes back,
* the worker (a subprocess, ``mixer-ext run``) with an HLS output and its
  HTTP endpoint serving the player page.

It prints the player URL and the speaker page URL and runs until Ctrl-C,
then ends everything cleanly (the worker finishes its playlist).  The room
server and the worker run as their own processes so that the talkers'
encoding never delays the mixer's 20 ms tick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.request
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable
from typing import Any

from mixer_ext.connectors.embedded import RoomClient
from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.tokens import mint_token
from mixer_ext.settings import Settings
from mixer_ext.sim.tracks import ToneTrack
from mixer_ext.tasks import stop_tasks, wait_bounded

log = logging.getLogger(__name__)

ROOM = "demo"
#: (identity, tone Hz)
TALKERS = (("alice", 440.0), ("bob", 660.0), ("carol", 880.0))
BOB_TALKS, BOB_MUTED = 8.0, 4.0
CAROL_STAYS, CAROL_AWAY = 15.0, 6.0
STARTUP_TIMEOUT = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--http-port", type=int, default=8080, help="the player / HLS endpoint (default 8080)"
    )
    parser.add_argument(
        "--room-port", type=int, default=7880, help="the room server (default 7880)"
    )
    parser.add_argument("--room", default=ROOM, help=f"room name (default {ROOM})")
    parser.add_argument(
        "--duration",
        type=float,
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    for flag, port in (("--http-port", args.http_port), ("--room-port", args.room_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"{flag}: {port} is not a port number")
    return asyncio.run(_demo(args, settings))


def _python_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mixer_ext", *args]


async def _wait_http(url: str, what: str, proc: Process) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` died."""
    end = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < end:
        if proc.returncode is not None:
            raise ConfigError(f"the {what} exited with {proc.returncode} during startup")
        with contextlib.suppress(OSError):
            status = await asyncio.to_thread(_http_status, url)
            if status == 200:
                return
        await asyncio.sleep(0.3)
    raise ConfigError(f"the {what} at {url} was not ready within {STARTUP_TIMEOUT:.0f} s")


def _http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return int(resp.status)


async def _talker_loop(
    url: str,
    room: str,
    identity: str,
    tone: float,
    secret: str,
    stop: asyncio.Event,
    script: Callable[[RoomClient, asyncio.Event], Awaitable[bool]],
) -> None:
    """Join, run ``script`` (returns True to rejoin), repeat until ``stop``."""
    while not stop.is_set():
        token = mint_token(secret, room, identity, ttl=86_400)
        client = RoomClient(
            url, room, identity, token, publish=ToneTrack(tone, 0.3), auto_subscribe=False
        )
        try:
            await client.connect()
            log.info("demo: %s joined (%.0f Hz)", identity, tone)
            again = await script(client, stop)
        except Exception as exc:  # keep the demo going; say what happened
            log.warning("demo: talker %s: %s; retrying in 3 s", identity, exc)
            again = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 3.0)
        finally:
            await client.disconnect()
        if not again:
            return


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _alice(client: RoomClient, stop: asyncio.Event) -> bool:
    await stop.wait()
    return False


async def _bob(client: RoomClient, stop: asyncio.Event) -> bool:
    while not await _sleep_or_stop(stop, BOB_TALKS):
        await client.set_enabled(False)
        if await _sleep_or_stop(stop, BOB_MUTED):
            break
        await client.set_enabled(True)
    return False


async def _carol(client: RoomClient, stop: asyncio.Event) -> bool:
    if await _sleep_or_stop(stop, CAROL_STAYS):
        return False
    await client.disconnect()
    log.info("demo: carol left; back in %.0f s", CAROL_AWAY)
    return not await _sleep_or_stop(stop, CAROL_AWAY)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    secret = (
        settings.room_secret.get_secret_value() if settings.room_secret else secrets.token_hex(32)
    )
    room_url = f"ws://{args.host}:{args.room_port}"
    env = {
        **os.environ,
        "MIXER_ROOM_SECRET": secret,
        "MIXER_ROOM_URL": room_url,
        "MIXER_HTTP_HOST": args.host,
        "MIXER_HTTP_PORT": str(args.http_port),
        # Ctrl-C ends the demo: nobody is left to fetch the final playlist
        "MIXER_HTTP_LINGER": "0",
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # New sessions: Ctrl-C reaches only us, and we stop the children in order.
    server = await asyncio.create_subprocess_exec(
        *_python_cmd("room-server", "--host", args.host, "--port", str(args.room_port), "--open"),
        env=env,
        start_new_session=True,
    )
    worker: Process | None = None
    talkers: list[asyncio.Task[None]] = []
    rc = 0
    try:
        await _wait_http(f"http://{args.host}:{args.room_port}/healthz", "room server", server)
        scripts = {"alice": _alice, "bob": _bob, "carol": _carol}
        for identity, tone in TALKERS:
            talkers.append(
                loop.create_task(
                    _talker_loop(
                        room_url, args.room, identity, tone, secret, stop, scripts[identity]
                    ),
                    name=f"demo-talker:{identity}",
                )
            )
        context = {"room": {"name": args.room}, "outputs": [f"hls:{args.room}"]}
        worker = await asyncio.create_subprocess_exec(
            *_python_cmd("run", "--context", json.dumps(context)), env=env, start_new_session=True
        )
        await _wait_http(f"http://{args.host}:{args.http_port}/readyz", "worker", worker)
        print(
            "\n"
            f"  Player:        http://{args.host}:{args.http_port}/\n"
            f"  HLS playlist:  http://{args.host}:{args.http_port}/hls/{args.room}/index.m3u8\n"
            f"  Speaker page:  http://{args.host}:{args.room_port}/?room={args.room}"
            "   (open mode: join with your microphone, no token needed)\n"
            "\n  alice 440 Hz talks, bob 660 Hz mutes every few seconds, carol 880 Hz comes"
            " and goes.\n  Ctrl-C ends everything cleanly.\n",
            flush=True,
        )
        waiters: list[asyncio.Task[Any]] = [
            loop.create_task(stop.wait(), name="demo-stop"),
            loop.create_task(worker.wait(), name="demo-worker-exit"),
        ]
        if args.duration:
            waiters.append(loop.create_task(asyncio.sleep(args.duration), name="demo-duration"))
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        if worker.returncode is not None:
            log.warning("demo: the worker ended by itself (exit code %s)", worker.returncode)
            rc = 0 if worker.returncode == 0 else 1
    except ConfigError as exc:
        print(f"mixer-ext demo: {exc}", file=sys.stderr)
        rc = 1
    finally:
        stop.set()
        # The worker first (it finishes its playlist), then the talkers, then the room.
        if worker is not None:
            rc = max(rc, await _terminate(worker, "worker"))
        for talker in talkers:  # they leave on `stop`; cancelled if they take longer
            if not await wait_bounded(talker, 10):
                await stop_tasks([talker], logger=log)
        await _terminate(server, "room server")
    print("demo: ended", flush=True)
    return rc


async def _terminate(proc: Process, what: str, grace: float = 40.0) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.error("demo: %s did not stop within %.0f s; killing it", what, grace)
            proc.kill()
            await proc.wait()
            return 1
    return 0 if proc.returncode in (0, -signal.SIGTERM) else 1
