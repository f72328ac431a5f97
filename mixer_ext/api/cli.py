"""``mixer-ext api``: its help, its arguments, and serving the plane's app until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web

from mixer_ext import eventloop
from mixer_ext.api import resources as r
from mixer_ext.api.config import ApiSettings, load_api_settings
from mixer_ext.api.plane import ControlPlane
from mixer_ext.api.routes import build_app
from mixer_ext.settings import Settings

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- CLI
HELP = """\
Serve the Media v1 REST API that the official twilio Python client (9.0.x) speaks:
MediaProcessors, PlayerStreamers, PlaybackGrants and MediaRecordings under /v1/.
A backend that launched the hosted audio-mixer extension keeps its code and changes
one line, client.media.base_url. Each MediaProcessor runs as a `mixer-ext run`
worker (a child process, or a Kubernetes Job); its HLS is served by this API
under /hls/ (proxied from the pod with Jobs), to players holding a PlaybackGrant.

Stopping the API leaves the workers running; the next start adopts them again
(a worker that died meanwhile is marked failed).
"""

EPILOG = """\
settings (environment):
  MIXER_AUTH_TOKEN          required; HTTP Basic password, and the key that signs
                            status callbacks (X-Twilio-Signature) and grants
  MIXER_ACCOUNT_SID         AC + 32 hex; the Basic user name (default AC000…0)
  MIXER_API_KEYS            optional SK…:secret pairs, comma-separated
  MIXER_API_PUBLIC_URL      base of every URL handed out (default http://HOST:PORT)
  MIXER_API_DATA_DIR        streams, recordings, private files (./mixer-api-data)
  MIXER_API_DATABASE        the SQLite state (default DATA_DIR/api.db)
  MIXER_API_MAX_PROCESSORS  active processors at once; more get 429 (default 10)
  MIXER_API_LAUNCHER        local (default: child processes) or kubernetes (Jobs)
  MIXER_API_INTERNAL_URL    where workers report status (kubernetes: required)
  MIXER_API_KUBE_NAMESPACE, MIXER_API_KUBE_IMAGE, MIXER_API_KUBE_ROOM_SECRET
                            kubernetes: the Jobs' namespace, image, room Secret
  MIXER_API_KUBE_RESOURCES, _GRACE_SECONDS, _TTL_SECONDS, _DATA_SIZE_LIMIT,
  _IMAGE_PULL_POLICY, _POD_SPEC, _ROOM_TOKEN_SOURCE
                            kubernetes: the rest of the Jobs' pod (the Helm chart
                            sets them from its worker values; docs/reference/settings.md)
  workers inherit the room settings (MIXER_ROOM_URL, MIXER_ROOM_BACKEND,
  MIXER_ROOM_SECRET, ...) from this environment (kubernetes: no credential as
  plain env; a Job's worker gets a token minted for its room, not the secret).

example:
  MIXER_AUTH_TOKEN=secret mixer-ext api --host 127.0.0.1 --port 8080

  from twilio.rest import Client
  client = Client("AC" + "0" * 32, "secret")
  client.media.base_url = "http://127.0.0.1:8080"   # the only change
  ps = client.media.v1.player_streamer.create(max_duration=3600)
  mp = client.media.v1.media_processor.create(
      extension="audio-mixer-v1",
      extension_context='{"room": {"name": "RM1"}, "outputs": ["%s"]}' % ps.sid)
  grant = client.media.v1.player_streamer(ps.sid).playback_grant().create(ttl=60)
  client.media.v1.media_processor(mp.sid).update(status="ended")

See docs/reference/media-api.md for what is and is not compatible.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")


async def serve(
    cfg: ApiSettings,
    host: str,
    port: int,
    player_dir: Path | None = None,
    room_rest: str | None = None,
) -> None:
    plane = ControlPlane(cfg, host, port, room_rest=room_rest)
    runner = web.AppRunner(build_app(plane, player_dir), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await plane.start()
    log.info("api listening on http://%s:%d (public URL %s)", host, port, plane.public_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await plane.stop()


def main(args: argparse.Namespace, settings: Settings) -> int:
    cfg = load_api_settings()
    room_rest = r.room_rest_base(settings.room_backend.value, settings.room_url)
    eventloop.run(
        serve(cfg, args.host, args.port, settings.player_dir, room_rest), settings.event_loop
    )
    return 0
