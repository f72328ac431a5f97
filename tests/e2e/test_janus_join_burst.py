"""100 participants join a running worker's Janus room in one burst (issue 27, item 1).

Three talkers (remote publishers, distinct tones) are in the room and mixed; then 97
more join at once, silent the way a WebRTC sender with Opus DTX is.  Before joins
were coalesced and spread over several subscriber PeerConnections, every join
renegotiated every m-line of one PeerConnection: ~100 renegotiations of up to 100
m-lines, the worker's loop blocked for hundreds of ms at a time and the room could
be lost.  What a listener would check: the bot joined once and stayed (no rejoin),
the burst took a few renegotiations (97 before), the three tones are in every
second of the HLS from before the burst to the end, and at the end every one of
the 100 participants is mixed (a level, not -1, in the timed metadata).  Debian's
Janus 1.1.2 fails to announce one of the crowd in about one burst in three (see
``mixer_ext.connectors.janus_reconcile``): the worker must find it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mixer_ext.connectors.janus_session import JanusSessionClosed
from mixer_ext.sim.janus_remote import RemotePublishers
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.spectrum import tone_levels
from tests.support.env import free_port
from tests.support.hls_reader import read_hls
from tests.support.janus_util import (
    ROOM_SECRET,
    JanusServer,
    interface_address,
    janus_server,
    room_config,
)
from tests.support.process_util import Proc, processes

pytestmark = pytest.mark.janus

ROOM = 4327
MAX_DURATION = 40
TALKERS = {"talker-a": 300.0, "talker-b": 500.0, "talker-c": 700.0}
CROWD = 97
NOISE_HZ = 900.0
#: subscribe renegotiations the burst may take: 100 streams over connections of 24
#: m-lines is 5, plus a few for joins that straddle a coalescing window (one per join
#: before: ~97)
MAX_BURST_RENEGOTIATIONS = 15
#: ticks later than this during the burst are printed, not asserted: the loop blocked
#: 0.25-0.8 s at a time before (49 such ticks in one run at load 12), 0-1 after at
#: load 12-21, but one run on this shared machine saw 27 under load 20 (a starved
#: process misses ticks whatever it does); bench/join_burst.py measures the blocks
MAX_TICK_LATENESS = 0.1


async def _scrape(port: int) -> tuple[float, float]:
    """(subscriber renegotiations so far, ticks later than ``MAX_TICK_LATENESS`` so far)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    reneg = late = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mixer_janus_renegotiations_total":
                reneg = sample.value
            elif sample.name == "mixer_tick_lateness_seconds_count":
                late += sample.value
            elif (
                sample.name == "mixer_tick_lateness_seconds_bucket"
                and float(sample.labels["le"]) == MAX_TICK_LATENESS
            ):
                late -= sample.value
    return reneg, late


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    with janus_server(tmp_path, rooms=room_config(ROOM, publishers=CROWD + 10)) as server:
        yield server


def _events(log: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def _wait_log(proc: Proc, event: str, count: int = 1, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while sum(e.get("event") == event for e in _events(proc.log())) < count:
        assert proc.popen.poll() is None, proc.log()[-3000:]
        assert time.monotonic() < deadline, (
            f"no {event!r} x{count} in the log:\n{proc.log()[-3000:]}"
        )
        await asyncio.sleep(0.2)


@pytest.mark.timeout(90)
async def test_a_burst_of_97_joins_keeps_the_room_and_the_talkers(
    janus: JanusServer, tmp_path: Path
) -> None:
    hls_dir = tmp_path / "hls"
    env = {
        "MIXER_ROOM_BACKEND": "janus",
        "MIXER_JANUS_URL": janus.url,
        "MIXER_HLS_DIR": str(hls_dir),
        "MIXER_HLS_PLAYLIST_TYPE": "event",
        "MIXER_LOG_FORMAT": "json",
        "MIXER_METRICS_PORT": str(metrics_port := free_port()),
    }
    context = {
        "room": {"name": str(ROOM)},
        "outputs": ["hls:burst"],
        "maxParticipantDuration": MAX_DURATION,
    }
    host = interface_address()
    publishers = RemotePublishers(janus.url, ROOM, ROOM_SECRET)
    with processes() as procs:
        worker = Proc(["run", "--context", json.dumps(context)], env, tmp_path / "worker.log")
        procs.append(worker)
        try:
            await _wait_log(worker, "joined")
            await publishers.open()
            for who, freq in TALKERS.items():
                await publishers.add(who, encode_tone(freq, 0.2), host)
            publishers.start()
            await _wait_log(worker, "track-subscribed", len(TALKERS))
            await asyncio.sleep(3)
            reneg0, late0 = await _scrape(metrics_port)
            silent = encode_tone(1000.0, 0.2)  # only its DTX frame is sent
            burst_at = time.monotonic()
            # RemotePublishers sends one add at a time (a few ms each: still a burst, asserted
            # below).  Janus 1.1.2 still loses an announcement now and then (its remote
            # publisher table has no lock): the worker must find those (janus_reconcile).
            try:
                await asyncio.gather(
                    *(publishers.add(f"crowd{i:03d}", silent, host, dtx=True) for i in range(CROWD))
                )
            except JanusSessionClosed as exc:
                # the load generator's own session (not the worker's) was dropped: never a
                # skip; say whether Janus itself went away, and what it logged
                alive = janus.process.poll() is None
                raise AssertionError(
                    f"load generator's Janus session closed ({exc}); Janus "
                    f"{'still running' if alive else f'exited {janus.process.returncode}'}:\n"
                    f"{janus.log_tail(30)}"
                ) from exc
            added = time.monotonic() - burst_at
            await _wait_log(worker, "track-subscribed", len(TALKERS) + CROWD, within=20)
            print(f"burst: all subscribed {time.monotonic() - burst_at:.1f} s after the first join")
            reneg1, late1 = await _scrape(metrics_port)
            rc = await asyncio.to_thread(worker.wait, MAX_DURATION + 30)
        finally:
            await publishers.close()
        wlog = worker.log()
    assert added < 5, f"Janus took {added:.1f} s to add the crowd: the burst was no burst"
    assert rc == 0, wlog[-3000:]
    print(f"burst: {reneg1 - reneg0:.0f} renegotiations, {late1 - late0:.0f} ticks late")
    assert reneg1 - reneg0 <= MAX_BURST_RENEGOTIATIONS, (reneg0, reneg1)
    events = _events(wlog)
    assert [e.get("event") for e in events].count("joined") == 1, "the bot joined once and stayed"
    assert not [e for e in events if e.get("event") == "disconnected"], wlog[-3000:]

    hls = read_hls(hls_dir / "burst")
    assert hls.ended, hls.playlist
    payloads = [p for _, p in hls.payloads]
    times = [t for t, _ in hls.payloads]
    # every second from the talkers' arrival to the end (the burst in the middle) holds
    # each of the three tones: nobody already talking went silent while the crowd joined
    first = next(i for i, p in enumerate(payloads) if all(w in p.levels for w in TALKERS))
    start = times[first] + 1.0 - hls.audio_start
    end = times[-1] - hls.audio_start
    assert end - start > 10, (start, end)
    second = hls.sample_rate
    t = start
    while t + 1 <= end:
        lo = int(t * second)
        levels = tone_levels(hls.audio[lo : lo + second], second, [*TALKERS.values(), NOISE_HZ])
        noise = levels.pop(NOISE_HZ)
        for who, freq in TALKERS.items():
            assert levels[freq] > 0.02 and levels[freq] > 20 * noise, (who, round(t, 1), levels)
        t += 1.0
    # at the end every participant is mixed: in the metadata with a level, not -1
    crowd = {f"crowd{i:03d}" for i in range(CROWD)}
    last = payloads[-1].levels
    missing = sorted((crowd | set(TALKERS)) - {w for w, v in last.items() if v >= 0})
    assert not missing, f"{len(missing)} not mixed at the end: {missing[:10]}"
