"""Sender CPU of N talkers in one process: pre-encoded Opus replay vs stock aiortc encode.

Method: this process adds N tracks to one aiortc peer connection and sends them
over loopback to a stock aiortc receiver in a child process (which decodes and
discards them, so the streams are real); only this process's CPU (user+sys,
getrusage) over the measuring window is reported, as % of one core per talker.
Rows run one after the other in one run, so the ratio is side by side.

    .venv/bin/python bench/talkers.py --n 50 --stock-n 20 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import time
from multiprocessing.connection import Connection

import benchlib
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole

from mixer_ext.sim.preencoded import PreEncodedOpusTrack, encode_tone
from mixer_ext.sim.tracks import ToneTrack


def _receiver(conn: Connection) -> None:
    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        hole = MediaBlackhole()
        pc.on("track", hole.addTrack)
        sdp, kind = conn.recv()
        await pc.setRemoteDescription(RTCSessionDescription(sdp, kind))
        await pc.setLocalDescription(await pc.createAnswer())
        conn.send((pc.localDescription.sdp, pc.localDescription.type))
        await hole.start()
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await hole.stop()
        await pc.close()

    asyncio.run(main())


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _run(n: int, kind: str, seconds: float) -> float:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(child,), daemon=True)
    proc.start()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        loops = [encode_tone(300 + 50 * (i % 20)) for i in range(min(n, 20))]
        for i in range(n):
            if kind == "preencoded":
                pc.addTrack(PreEncodedOpusTrack(loops[i % len(loops)]))
            else:
                pc.addTrack(ToneTrack(300 + 50 * (i % 20)))
        await pc.setLocalDescription(await pc.createOffer())
        parent.send((pc.localDescription.sdp, pc.localDescription.type))
        sdp, typ = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        await pc.setRemoteDescription(RTCSessionDescription(sdp, typ))
        await asyncio.sleep(3)  # connect and settle
        c0, t0 = _cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        return 100 * (_cpu() - c0) / (time.monotonic() - t0)
    finally:
        parent.send("stop")
        await pc.close()
        proc.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="pre-encoded talkers")
    ap.add_argument("--stock-n", type=int, default=20, help="stock aiortc talkers")
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    print(benchlib.machine())
    print(benchlib.load())
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    rows = []
    for kind, n in (("stock", args.stock_n), ("preencoded", args.n)):
        pct = asyncio.run(_run(n, kind, args.seconds))
        rows.append((kind, n, pct))
        per = pct / n
        print(f"{kind:>10}  N={n:<4} sender CPU {pct:6.1f} % of a core, {per:5.2f} % per talker")
    (_, sn, sp), (_, pn, pp) = rows
    print(f"ratio per talker, pre-encoded / stock: {(pp / pn) / (sp / sn):.3f}")


if __name__ == "__main__":
    main()
