"""``mixer-ext demo`` (what ``make demo`` runs): the whole product on one machine, driven
the way its users drive it, through the Media v1 API.

* the embedded room server (a subprocess, open mode, bound to loopback),
* three talkers with different tones, in this process: ``alice`` talks all
  the time, ``bob`` mutes and unmutes every few seconds, ``carol`` leaves
  and comes back,
* the control plane (a subprocess, ``mixer-ext api``), through which the demo
  creates a PlayerStreamer and a MediaProcessor (``audio-mixer-v1``) streaming
  the room to it; the API launches the worker (``mixer-ext run``) and serves its HLS,
* a tiny "backend" on ``--http-port``: each visit of ``/`` creates a fresh
  PlaybackGrant through the API and redirects to the player page with a
  Twilio-style player access token holding it (grants live at most 60 s, so a
  printed grant URL would expire; a backend hands one to each listener).

Ctrl-C ends the processor through the API (the worker finishes its playlist with
``#EXT-X-ENDLIST``), then stops the API, the talkers and the room server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
from aiohttp import web

from mixer_ext.api.client import MediaApiClient, MediaApiError
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
#: the PlayerStreamer's and MediaProcessor's MaxDuration: the API's maximum (25 h),
#: since both default to 300 s and the demo runs until Ctrl-C
DEMO_MAX_DURATION = 90_000
ACCOUNT_SID = "AC" + "d" * 32
API_KEY_SID = "SK" + "d" * 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--http-port",
        type=int,
        default=8080,
        help="the player link: each visit gets a fresh PlaybackGrant (default 8080)",
    )
    parser.add_argument(
        "--api-port", type=int, default=8090, help="the Media v1 API (default 8090)"
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
    ports = (
        ("--http-port", args.http_port),
        ("--api-port", args.api_port),
        ("--room-port", args.room_port),
    )
    for flag, port in ports:
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


def player_access_token(grant: dict[str, Any], key_secret: str, ttl: int = 3600) -> str:
    """A Twilio-style player access token (what ``twilio.jwt.access_token`` mints for a
    ``PlaybackGrant``): ``grants.player`` holds the grant the API returned."""
    now = int(time.time())
    payload = {
        "jti": f"{API_KEY_SID}-{now}",
        "iss": API_KEY_SID,
        "sub": ACCOUNT_SID,
        "iat": now,
        "exp": now + ttl,
        "grants": {"identity": "demo-listener", "player": grant},
    }
    headers = {"cty": "twilio-fpa;v=1"}
    return jwt.encode(payload, key_secret, algorithm="HS256", headers=headers)


async def _start_backend(
    host: str, port: int, api: MediaApiClient, api_base: str, streamer_sid: str, key: str
) -> web.AppRunner:
    """``GET /``: a fresh PlaybackGrant, then the player page with its access token."""

    async def listen(request: web.Request) -> web.Response:
        try:
            body = await api.create_playback_grant(streamer_sid, ttl=60)
        except MediaApiError as exc:
            return web.Response(status=502, text=f"the API refused a PlaybackGrant: {exc}\n")
        token = player_access_token(body["grant"], key)
        raise web.HTTPFound(f"{api_base}/player/?token={quote(token)}")

    app = web.Application()
    app.router.add_get("/", listen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _wait_streaming(api: MediaApiClient, processor: str, streamer: str) -> None:
    """Until the PlayerStreamer is ``started`` (its processor streams to it)."""
    end = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < end:
        if (await api.fetch_player_streamer(streamer))["status"] == "started":
            return
        mp = await api.fetch_media_processor(processor)
        if mp["status"] != "started":
            raise ConfigError(
                f"the MediaProcessor {processor} is {mp['status']} "
                f"({mp.get('ended_reason')}) before it streamed"
            )
        await asyncio.sleep(0.5)
    raise ConfigError(f"the MediaProcessor did not stream within {STARTUP_TIMEOUT:.0f} s")


async def _wait_endlist(playlist: Path, within: float = 15.0) -> None:
    """Wait (bounded) until the worker has finished ``playlist`` with ``#EXT-X-ENDLIST``."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            if "#EXT-X-ENDLIST" in await asyncio.to_thread(playlist.read_text):
                return
        await asyncio.sleep(0.2)
    log.warning("demo: %s has no #EXT-X-ENDLIST after %.0f s", playlist, within)


async def _end_processor(api: MediaApiClient, sid: str, within: float = 40.0) -> bool:
    """End the processor through the API; True once it is ``ended``."""
    try:
        mp = await api.end_media_processor(sid)
        end = time.monotonic() + within
        while mp["status"] == "started" and time.monotonic() < end:
            await asyncio.sleep(0.5)
            mp = await api.fetch_media_processor(sid)
    except (MediaApiError, OSError, TimeoutError) as exc:
        log.error("demo: ending %s through the API failed: %s", sid, exc)
        return False
    log.info("demo: %s is %s (%s)", sid, mp["status"], mp.get("ended_reason"))
    return bool(mp["status"] == "ended")


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    secret = (
        settings.room_secret.get_secret_value() if settings.room_secret else secrets.token_hex(32)
    )
    room_url = f"ws://{args.host}:{args.room_port}"
    data_dir = Path(os.environ.get("MIXER_API_DATA_DIR") or tempfile.mkdtemp(prefix="mixer-demo-"))
    auth_token = os.environ.get("MIXER_AUTH_TOKEN") or secrets.token_hex(32)
    key_secret = secrets.token_hex(32)
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("MIXER_HTTP_PORT", "MIXER_METRICS_PORT")
    }
    env = {**base_env, "MIXER_ROOM_SECRET": secret, "MIXER_ROOM_URL": room_url}
    api_env = {
        **env,
        "MIXER_ACCOUNT_SID": ACCOUNT_SID,
        "MIXER_AUTH_TOKEN": auth_token,
        "MIXER_API_KEYS": f"{API_KEY_SID}:{key_secret}",
        "MIXER_API_DATA_DIR": str(data_dir),
    }
    api_env.pop("MIXER_API_PUBLIC_URL", None)
    api_base = f"http://{args.host}:{args.api_port}"
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
    api_proc: Process | None = None
    backend: web.AppRunner | None = None
    processor: str | None = None
    streamer_sid: str | None = None
    talkers: list[asyncio.Task[None]] = []
    rc = 0
    async with MediaApiClient(api_base, ACCOUNT_SID, auth_token) as api:
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
            api_proc = await asyncio.create_subprocess_exec(
                *_python_cmd("api", "--host", args.host, "--port", str(args.api_port)),
                env=api_env,
                start_new_session=True,
            )
            await _wait_http(f"{api_base}/healthz", "API", api_proc)
            duration = str(DEMO_MAX_DURATION)
            ps = await api.create_player_streamer(MaxDuration=duration)
            mp = await api.create_media_processor(
                "audio-mixer-v1",
                {"room": {"name": args.room}, "outputs": [ps["sid"]]},
                MaxDuration=duration,
            )
            processor = str(mp["sid"])
            streamer_sid = str(ps["sid"])
            log.info("demo: PlayerStreamer %s, MediaProcessor %s", ps["sid"], processor)
            await _wait_streaming(api, processor, ps["sid"])
            backend = await _start_backend(
                args.host, args.http_port, api, api_base, ps["sid"], key_secret
            )
            print(
                "\n"
                f"  Player:        http://{args.host}:{args.http_port}/"
                "   (each visit: a fresh PlaybackGrant, played with a player access token)\n"
                f"  Media v1 API:  {api_base}/v1/   (PlayerStreamer {ps['sid']},"
                f" MediaProcessor {processor})\n"
                f"  Speaker page:  http://{args.host}:{args.room_port}/?room={args.room}"
                "   (open mode: join with your microphone, no token needed)\n"
                f"  API data:      {data_dir}\n"
                "\n  alice 440 Hz talks, bob 660 Hz mutes every few seconds, carol 880 Hz comes"
                " and goes.\n  Ctrl-C ends the MediaProcessor through the API, then everything.\n",
                flush=True,
            )
            waiters: list[asyncio.Task[Any]] = [
                loop.create_task(stop.wait(), name="demo-stop"),
                loop.create_task(api_proc.wait(), name="demo-api-exit"),
            ]
            if args.duration:
                waiters.append(loop.create_task(asyncio.sleep(args.duration), name="demo-duration"))
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if api_proc.returncode is not None:
                log.warning("demo: the API ended by itself (exit code %s)", api_proc.returncode)
                rc = 1
        except (ConfigError, MediaApiError) as exc:
            print(f"mixer-ext demo: {exc}", file=sys.stderr)
            rc = 1
        finally:
            stop.set()
            if backend is not None:
                await backend.cleanup()
            # The processor first (its worker finishes the playlist), then the API,
            # the talkers, the room.
            api_up = api_proc is not None and api_proc.returncode is None
            if processor is not None and api_up and not await _end_processor(api, processor):
                rc = 1
            elif processor is not None and api_up and streamer_sid is not None:
                # "ended" is the API's record; the worker may still be finishing the
                # playlist, and stopping the API now could cut it short
                await _wait_endlist(data_dir / "hls" / streamer_sid / "index.m3u8")
            if api_proc is not None:
                rc = max(rc, await _terminate(api_proc, "API"))
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
