"""CPU time per second of audio: AAC encode once + HLS + RTMP fan-out.

Method: a synthetic mix (440 Hz tone plus noise, so the encoder spends its
whole bitrate) is fed to a real ``OutputPipeline`` as fast as it takes it
(never dropping: the feeder waits when a queue is half full), with one HLS
output in a temp dir and one RTMP output publishing to a local nginx-rtmp
started for the run (or ``ffmpeg -listen`` when nginx-rtmp is missing).
The figure is this process's CPU time (user + system, all threads:
``time.process_time``) plus that of the RTMP connection process (which
reports its own, import of PyAV excluded), divided by the seconds of audio, so 0.01 means 1 % of
one core in real time.  The receiver's own CPU is not counted.  Three runs:
encoder alone, encoder + HLS, encoder + HLS + RTMP.

    .venv/bin/python bench/encode_fanout.py [--quick] [--seconds N] [--bitrate KBPS]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib

from mixer_ext.context import OutputSpec, parse_output
from mixer_ext.core.frames import MixedFrame
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.encoder import AacEncoder
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.outputs.rtmp import RtmpOutput
from mixer_ext.settings import Settings
from mixer_ext.testing.feed import feed, payload_for, rich_frame

NGINX_RTMP = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(tmp: Path) -> tuple[subprocess.Popen[bytes] | None, str, str]:
    """(process, RTMP URL, description) of a local receiver, or (None, "", why not)."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/bench"
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx and Path(NGINX_RTMP).exists():
        conf = tmp / "nginx.conf"
        conf.write_text(
            f"load_module {NGINX_RTMP};\nmaster_process off;\ndaemon off;\n"
            f"pid {tmp}/nginx.pid;\nerror_log {tmp}/nginx.log;\n"
            "events { worker_connections 16; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
        )
        proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf)], stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return proc, url, "nginx-rtmp on loopback"
            except OSError:
                time.sleep(0.05)
        proc.kill()
        return None, "", "nginx-rtmp did not start"
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        proc = subprocess.Popen(
            [ffmpeg, "-nostdin", "-loglevel", "quiet", "-listen", "1", "-i", url,
             "-c", "copy", "-f", "null", "-"],
        )  # fmt: skip
        time.sleep(0.5)
        return proc, url, "ffmpeg -listen on loopback"
    return None, "", "no RTMP receiver installed (nginx-rtmp or ffmpeg)"


def bench_encoder(seconds: float, bitrate: int) -> float:
    encoder = AacEncoder(bitrate)
    frames = [rich_frame(t) for t in range(round(seconds * 50))]
    t0 = time.process_time()
    for frame in frames:
        encoder.encode(frame)
    encoder.flush()
    return (time.process_time() - t0) / seconds


async def bench_pipeline(
    specs: list[OutputSpec], settings: Settings, seconds: float, bitrate: int
) -> float:
    pipeline = OutputPipeline(specs, bitrate, settings, rtmp_first_delay=0.1)
    await pipeline.start()
    # connect RTMP first so the measured part is steady-state streaming
    tick = 0
    deadline = time.monotonic() + 10
    while any(o.kind == "rtmp" and o.state.value != "running" for o in pipeline.outputs):
        if time.monotonic() > deadline:
            raise SystemExit(f"RTMP did not connect: {pipeline.status()}")
        tick = await feed(pipeline, 0.1, speed=1.0, first_tick=tick, rich=True)
    # the mix is made before the clock starts: only encoding and fan-out are measured
    items: list[MixedFrame | MetadataPayload] = []
    for t in range(tick, tick + round(seconds * 50)):
        items.append(rich_frame(t))
        if (t + 1) % 25 == 0:
            items.append(payload_for(t // 25))
    t0 = time.process_time() + child_cpu(pipeline)
    for i, item in enumerate(items):
        if isinstance(item, MixedFrame):
            pipeline.on_mix(item)
        else:
            pipeline.on_payload(item)
        while pipeline._queue.qsize() > 64 or any(  # noqa: ASYNC110 - polling threads' queues
            o._queue.qsize() > 128 for o in pipeline.outputs
        ):
            await asyncio.sleep(0.002)
        if i % 10 == 0:
            await asyncio.sleep(0)
    # let every queue drain (the RTMP process reports its CPU in its heartbeats)
    while pipeline._queue.qsize() or any(o._queue.qsize() for o in pipeline.outputs):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    used = time.process_time() + child_cpu(pipeline) - t0
    await pipeline.close()
    dropped = sum(o["dropped_packets"] for o in pipeline.status()["outputs"])
    if dropped:
        print(f"  (warning: {dropped} packets dropped during the run)")
    return used / seconds


def child_cpu(pipeline: OutputPipeline) -> float:
    """CPU seconds of the RTMP connection processes (they run outside this process)."""
    return sum(o.child_cpu_seconds() for o in pipeline.outputs if isinstance(o, RtmpOutput))


def report(what: str, cpu: float, note: str = "") -> None:
    print(f"{what + ':':24} {cpu * 1000:7.2f} ms CPU per s of audio ({cpu:.2%} of a core){note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s of audio (smoke run)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bitrate", type=int, default=128)
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    print(f"machine: {benchlib.machine()}; {benchlib.load()}")
    print(f"method: {seconds:.0f} s of synthetic mix, AAC {args.bitrate} kbps, fed as fast as "
          "the pipeline takes it;\n        CPU = user+sys time of this process and of its RTMP "
          "connection process / seconds of audio")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        settings = Settings(hls_dir=tmp / "hls")
        enc = bench_encoder(seconds, args.bitrate)
        report("encode only", enc)
        hls = asyncio.run(
            bench_pipeline([parse_output("hls:bench")], settings, seconds, args.bitrate)
        )
        report("encode + HLS", hls)
        proc, url, receiver = start_receiver(tmp)
        if proc is None:
            print(f"encode + HLS + RTMP:      skipped ({receiver})")
            return 0
        try:
            full = asyncio.run(
                bench_pipeline(
                    [parse_output("hls:bench"), parse_output(url)], settings, seconds, args.bitrate
                )
            )
        finally:
            proc.terminate()
            proc.wait(10)
        report("encode + HLS + RTMP", full, f"  [receiver: {receiver}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
