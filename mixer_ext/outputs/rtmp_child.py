"""The RTMP child process: runs one ``RtmpSession`` fed through stdin.

Started by ``RtmpOutput`` as ``python -m mixer_ext.outputs.rtmp_child``.
Protocol (all frames are a 4-byte little-endian length, then the body):

* stdin, first frame: JSON config ``{"url", "extradata" (hex), "bit_rate",
  "max_delay", "first_delay", "start_ms", "log_level", "log_format"}``; the URL (and its
  stream key) travels here, never on the command line where ``ps`` shows it.
* stdin, then: ``A`` + ``<qqI`` (pts, dts, duration) + AAC bytes;
  ``M`` + ``<q`` (pts) + payload JSON; ``T`` + ``<q`` (pts) + an app's text (UTF-8);
  ``C`` + one byte (end_of_stream) to
  finish.  End of input finishes too (without ``end_of_stream``).
* stdout: one JSON status line (``RtmpSession.status()`` plus
  ``received``, the frames read so far, and ``cpu``, its CPU seconds since
  PyAV was loaded) every
  ``HEARTBEAT`` seconds and a last one after finishing.  The parent treats
  missing heartbeats or a long ``busy_for`` as a stall.
* stderr: log lines, formatted and redacted like the parent's.
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import sys
import threading
import time
from typing import IO

import av.logging

from mixer_ext.core.payload import AppPayload, MetadataPayload, TimedPayload
from mixer_ext.encode.encoder import AacParams, EncodedPacket
from mixer_ext.log import setup_logging
from mixer_ext.outputs.rtmp_session import RtmpSession

HEARTBEAT = 0.25
_AUDIO_HEADER = struct.Struct("<qqI")
_META_HEADER = struct.Struct("<q")


def write_frame(out: IO[bytes], body: bytes) -> None:
    out.write(struct.pack("<I", len(body)) + body)


def read_frame(inp: IO[bytes]) -> bytes | None:
    head = inp.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack("<I", head)
    body = inp.read(n)
    return body if len(body) == n else None


def audio_frame(packet: EncodedPacket) -> bytes:
    return b"A" + _AUDIO_HEADER.pack(packet.pts, packet.dts, packet.duration) + packet.data


def metadata_frame(payload: TimedPayload) -> bytes:
    """``M``: the mixer's payload (JSON); ``T``: an app's text, verbatim."""
    if isinstance(payload, AppPayload):
        return b"T" + _META_HEADER.pack(payload.pts) + payload.text.encode()
    return b"M" + _META_HEADER.pack(payload.pts) + payload.to_json().encode()


def close_frame(end_of_stream: bool) -> bytes:
    return b"C" + (b"\x01" if end_of_stream else b"\x00")


def main() -> int:
    # The parent decides when this process ends (close frame, end of input, or kill):
    # a Ctrl-C or SIGTERM sent to the whole process group must not cut the stream short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    raw = read_frame(inp)
    if raw is None:
        return 2
    config = json.loads(raw)
    setup_logging(config.get("log_level", "INFO"), config.get("log_format", "text"))
    av.logging.set_level(av.logging.WARNING)
    session = RtmpSession(
        config["url"],
        AacParams(bytes.fromhex(config["extradata"]), int(config["bit_rate"])),
        float(config["max_delay"]),
        float(config["first_delay"]),
        int(config.get("start_ms", 0)),
    )
    cpu0 = time.process_time()
    session.open()
    lock = threading.Lock()
    done = threading.Event()
    received = 0

    def report() -> None:
        status = {**session.status(), "received": received, "cpu": time.process_time() - cpu0}
        line = json.dumps(status).encode() + b"\n"
        with lock:
            out.write(line)
            out.flush()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT):
            try:
                report()
            except (OSError, ValueError):
                return  # the parent is gone

    report()  # first heartbeat before any FFmpeg call can hold the GIL
    beat = threading.Thread(target=heartbeat, name="rtmp-heartbeat", daemon=True)
    beat.start()
    end_of_stream = False
    while True:
        frame = read_frame(inp)
        if frame is None:
            break
        received += 1
        kind, body = frame[:1], frame[1:]
        if kind == b"A":
            pts, dts, duration = _AUDIO_HEADER.unpack_from(body)
            session.offer(EncodedPacket(body[_AUDIO_HEADER.size :], pts, dts, duration))
        elif kind == b"M":
            (pts,) = _META_HEADER.unpack_from(body)
            session.offer(MetadataPayload.from_json(body[_META_HEADER.size :], pts=pts))
        elif kind == b"T":
            (pts,) = _META_HEADER.unpack_from(body)
            text = body[_META_HEADER.size :].decode("utf-8")
            session.offer(AppPayload(text, pts=pts))
        elif kind == b"C":
            end_of_stream = body[:1] == b"\x01"
            break
    session.close(end_of_stream)
    done.set()
    beat.join(1.0)
    with contextlib.suppress(OSError, ValueError):
        report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
