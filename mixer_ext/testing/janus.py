"""A real Janus (Debian ``janus``) started on a free port of this machine's interface.

Janus gathers no loopback ICE candidates, so it listens on the machine's own address.
The tests wrap ``start_janus`` with their skip/fail rule for a missing program.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_ext.testing.net import free_port

# Debian installs the plugins under the multiarch directory (x86_64-linux-gnu, aarch64-...).
JANUS_LIB_DIR = next(
    iter(sorted(Path("/usr/lib").glob("*/janus/plugins"))), Path("/nonexistent")
).parent
ROOM_SECRET = "room-admin-secret"


def interface_address() -> str:
    """This machine's primary IPv4 address (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = str(s.getsockname()[0])
        except OSError:
            addr = ""
    if addr and not addr.startswith("127."):
        return addr
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout
    for word in out.split():
        if "." in word and not word.startswith("127."):
            return word
    raise RuntimeError("no non-loopback IPv4 address: Janus gathers no loopback candidates")


@dataclass
class JanusServer:
    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    api_secret: str | None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _write_config(
    cfg: Path,
    host: str,
    ws_port: int,
    rtp_range: str,
    api_secret: str | None,
    rooms: str,
    session_timeout: int,
    string_ids: bool,
) -> None:
    plugins = cfg / "plugins"
    transports = cfg / "transports"
    empty = cfg / "empty"
    for d in (plugins, transports, empty):
        d.mkdir(parents=True, exist_ok=True)
    # Janus loads every library in its folders: give it just these two.
    (plugins / "libjanus_videoroom.so").symlink_to(JANUS_LIB_DIR / "plugins/libjanus_videoroom.so")
    (transports / "libjanus_websockets.so").symlink_to(
        JANUS_LIB_DIR / "transports/libjanus_websockets.so"
    )
    secret_line = f'\tapi_secret = "{api_secret}"\n' if api_secret else ""
    (cfg / "janus.jcfg").write_text(
        "general: {\n"
        f'\tconfigs_folder = "{cfg}"\n'
        f'\tplugins_folder = "{plugins}"\n'
        f'\ttransports_folder = "{transports}"\n'
        f'\tevents_folder = "{empty}"\n'
        f'\tloggers_folder = "{empty}"\n'
        "\tdebug_level = 4\n"
        f"\tsession_timeout = {session_timeout}\n"
        f"{secret_line}"
        "}\n"
        "media: {\n"
        f'\trtp_port_range = "{rtp_range}"\n'
        "}\n"
        "nat: {\n"
        f'\tice_enforce_list = "{host}"\n'
        "\tnice_debug = false\n"
        "}\n"
        "plugins: {\n}\ntransports: {\n}\nloggers: {\n}\nevents: {\n}\n"
    )
    (cfg / "janus.transport.websockets.jcfg").write_text(
        "general: {\n"
        '\tjson = "compact"\n'
        "\tws = true\n"
        f"\tws_port = {ws_port}\n"
        f'\tws_ip = "{host}"\n'
        "\twss = false\n"
        "}\n"
        "admin: {\n\tadmin_ws = false\n\tadmin_wss = false\n}\n"
    )
    general = "\tstring_ids = true\n" if string_ids else ""
    (cfg / "janus.plugin.videoroom.jcfg").write_text("general: {\n" + general + "}\n" + rooms)


def room_config(room: int | str, *, publishers: int = 10, secret: str = ROOM_SECRET) -> str:
    """A VideoRoom config block: audio-only friendly, join/leave notified."""
    return (
        f"room-{room}: {{\n"
        '\tdescription = "mixer-ext test room"\n'
        f'\tsecret = "{secret}"\n'
        f"\tpublishers = {publishers}\n"
        "\tnotify_joining = true\n"
        '\taudiocodec = "opus"\n'
        "\taudiolevel_event = false\n"
        "}\n"
    )


def start_janus(
    workdir: Path,
    *,
    rooms: str,
    api_secret: str | None = None,
    session_timeout: int = 60,
    string_ids: bool = False,
    timeout: float = 20.0,
    rtp_ports: int = 100,
) -> JanusServer:
    """Start Janus with a config in ``workdir``; returns once its websocket accepts."""
    janus = shutil.which("janus")
    if janus is None:
        raise RuntimeError("janus is not installed (Debian package janus)")
    if not (JANUS_LIB_DIR / "plugins/libjanus_videoroom.so").exists():
        raise RuntimeError("the janus VideoRoom plugin is missing")
    host = interface_address()
    port = free_port(host)
    rtp_lo = random.randrange(40000, 60000 - rtp_ports, 100)  # one port per PeerConnection
    cfg = workdir / "janus-config"
    rtp_range = f"{rtp_lo}-{rtp_lo + rtp_ports - 1}"
    _write_config(cfg, host, port, rtp_range, api_secret, rooms, session_timeout, string_ids)
    log_path = workdir / "janus.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [janus, "-F", str(cfg), "-C", str(cfg / "janus.jcfg"), "--disable-colors"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log_file.close()
    server = JanusServer(f"ws://{host}:{port}", host, port, proc, log_path, api_secret)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"janus exited with {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return server
        time.sleep(0.2)
    stop_janus(server)
    raise RuntimeError(
        f"janus did not listen on {host}:{port} within {timeout}s:\n{server.log_tail()}"
    )


def stop_janus(server: JanusServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@contextlib.contextmanager
def janus_server(workdir: Path, **kwargs: Any) -> Iterator[JanusServer]:
    server = start_janus(workdir, **kwargs)
    try:
        yield server
    finally:
        stop_janus(server)
