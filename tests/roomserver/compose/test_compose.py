"""Compositions (issue 23.3): a room's recordings mixed offline, checked by FFT per window.

Recordings are made by the real recorder from real libopus payloads (three talkers,
each its own tone, joining at different times, one with a DTX pause); the composition
is decoded by FFmpeg (PyAV) and each tone must be where (and only where) its talker was.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from mixer_ext.core.payload import MetadataPayload
from mixer_ext.roomserver.compose import opus_runs
from mixer_ext.roomserver.compose.engine import compose
from mixer_ext.roomserver.compose.spec import (
    CompositionSpecError,
    Source,
    plan,
    segments,
    select,
)
from mixer_ext.roomserver.recorder import opus_head
from mixer_ext.sim.preencoded import encode_tone
from mixer_ext.testing.timeline import decode_timeline, tone_level
from tests.support.compose import FRAME, RATE, record


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    d = tmp_path_factory.mktemp("room")
    return [
        record(d / "alice", 440, 0.0, [(0.0, 3.0)]),
        record(d / "bob", 1000, 2.0, [(0.0, 1.5), (2.5, 4.0)]),  # 3.5..4.5 s: DTX pause
        record(d / "carol", 2500, 8.0, [(0.0, 2.0)]),  # after a 2 s hole in the room
    ]


def test_selection_wildcards_and_errors(room: list[Source]) -> None:
    assert [s.name for s in select(room, ["*"])] == ["alice", "bob", "carol"]
    assert [s.name for s in select(room, ["*"], ["b*"])] == ["alice", "carol"]
    assert [s.name for s in select(room, ["al*, car*"])] == ["alice", "carol"]
    with pytest.raises(CompositionSpecError, match="AudioSources"):
        select(room, [])
    with pytest.raises(CompositionSpecError, match="matches"):
        select(room, ["nobody"])
    with pytest.raises(CompositionSpecError, match="invalid track name"):
        select(room, ["a/b"])
    with pytest.raises(CompositionSpecError, match="Format"):
        plan(room, Path("x"), fmt="mkv")


def test_trim_removes_the_holes(room: list[Source]) -> None:
    assert segments(room, trim=False) == [(0, 10 * RATE)]
    assert segments(room, trim=True) == [(0, 6 * RATE), (8 * RATE, 10 * RATE)]


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "aac"), ("webm", "opus")])
def test_composition_holds_every_tone_at_its_time(
    room: list[Source], tmp_path: Path, fmt: str, codec: str
) -> None:
    out = tmp_path / f"c.{fmt}"
    seen: list[float] = []
    result = compose(plan(room, out, fmt=fmt, trim=False), seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert abs(result.duration - 10.0) < 0.01 and result.channels == 1
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == codec
    pcm = decode_timeline(out, keep_start=True)
    assert abs(len(pcm) / RATE - 10.0) < 0.1

    def level(freq: float, a: float, b: float) -> float:
        return tone_level(pcm, freq, a, b)

    # alice 0..3 s, bob 2..3.5 and 4.5..6 s, nobody 6..8 s, carol 8..10 s
    assert level(440, 0.2, 1.8) > 0.2 and level(1000, 0.2, 1.8) < 0.01
    assert level(440, 2.2, 2.8) > 0.2 and level(1000, 2.2, 2.8) > 0.2
    assert level(440, 3.2, 5.8) < 0.01
    assert level(1000, 3.6, 4.4) < 0.01  # bob's DTX pause stays a pause
    assert level(1000, 4.7, 5.8) > 0.2
    for f in (440, 1000, 2500):
        assert level(f, 6.1, 7.9) < 0.01  # the hole is silence
    assert level(2500, 8.2, 9.8) > 0.2


@pytest.mark.slow
def test_trim_and_exclusion(room: list[Source], tmp_path: Path) -> None:
    out = tmp_path / "c.webm"
    result = compose(plan(room, out, fmt="webm", excluded=["bob"], trim=True))
    # alice 0..3, then (bob excluded) the hole to 8 s is trimmed: carol right after
    assert abs(result.duration - 5.0) < 0.01
    pcm = decode_timeline(out, keep_start=True)
    assert tone_level(pcm, 440, 0.2, 2.8) > 0.2
    assert tone_level(pcm, 1000, 0.2, 4.8) < 0.01  # bob removed
    assert tone_level(pcm, 2500, 3.2, 4.8) > 0.2


def levels_of(path: Path) -> tuple[list[float], dict[str, list[int]]]:
    """The levels sidecar parsed: each payload's time, each participant's ``v`` per payload;
    every payload checked as the live stream's own (``MetadataPayload.from_json``)."""
    doc = json.loads(path.read_text())
    assert doc["sample_rate"] == RATE and doc["window"] == 0.5
    times: list[float] = []
    by: dict[str, list[int]] = {}
    for n, item in enumerate(doc["payloads"]):
        payload = MetadataPayload.from_json(json.dumps(item["payload"]))
        assert payload.seq == n
        times.append(item["t"])
        for identity, v in payload.levels.items():
            by.setdefault(identity, []).append(v)
    return times, by


def test_levels_beside_the_composition(room: list[Source], tmp_path: Path) -> None:
    """Per-participant levels by the live mix's rules, per 500 ms of the composition: the
    peak of each one's own audio, 0 in a DTX pause, -1 where it has no recording."""
    out = tmp_path / "c.mp4"
    result = compose(plan(room, out, fmt="mp4", trim=False))
    assert result.levels == tmp_path / "c-levels.json"
    times, v = levels_of(result.levels)
    assert times == [0.5 * (n + 1) for n in range(20)]
    loud = 3000  # encode_tone's level is about -10 dBFS: a peak near 10 000
    # alice 0..3 s (windows 0-5), bob 2..3.5 + DTX 3.5..4.5 + 4.5..6, carol 8..10
    assert all(x > loud for x in v["alice"][:6]) and v["alice"][6:] == [-1] * 14
    assert v["bob"][:4] == [-1] * 4 and all(x > loud for x in v["bob"][4:7])
    assert v["bob"][7:9] == [0, 0]  # the DTX pause: present, silent
    assert all(x > loud for x in v["bob"][9:12]) and v["bob"][12:] == [-1] * 8
    assert v["carol"][:16] == [-1] * 16 and all(x > loud for x in v["carol"][16:])

    # trimmed and without bob: the levels follow the composition's own timeline
    out = tmp_path / "t.webm"
    result = compose(plan(room, out, fmt="webm", excluded=["bob"], trim=True))
    assert result.levels is not None
    times, v = levels_of(result.levels)
    assert len(times) == 10 and set(v) == {"alice", "carol"}
    assert all(x > loud for x in v["alice"][:6]) and v["alice"][6:] == [-1] * 4
    assert v["carol"][:6] == [-1] * 6 and all(x > loud for x in v["carol"][6:])


@pytest.mark.slow
async def test_worker_processes_compose_with_bounded_concurrency(
    room: list[Source], tmp_path: Path
) -> None:
    """Two compositions through one worker slot: the second starts after the first."""
    import asyncio

    from mixer_ext.roomserver.compose.workers import CompositionFailed, CompositionWorkers

    workers = CompositionWorkers(1)
    events: list[str] = []
    progress: dict[str, list[float]] = {"a": [], "b": []}

    async def one(name: str) -> float:
        job = plan(room, tmp_path / f"{name}.mp4", fmt="mp4")
        result = await workers.run(
            job, progress[name].append, on_started=lambda: events.append(f"start {name}")
        )
        events.append(f"done {name}")
        return result.duration

    durations = await asyncio.gather(one("a"), one("b"))
    assert durations == [8.0, 8.0]
    assert events == ["start a", "done a", "start b", "done b"]
    assert progress["a"][-1] == 1.0 and progress["b"][-1] == 1.0
    pcm = decode_timeline(tmp_path / "b.mp4", keep_start=True)
    assert tone_level(pcm, 2500, 6.2, 7.8) > 0.2
    # a job that cannot be made fails with a reason, the pool goes on
    broken = Source("x", tmp_path / "missing.mka", 0, RATE)
    with pytest.raises(CompositionFailed, match=r"missing\.mka"):
        await workers.run(plan([broken], tmp_path / "x.webm"))
    assert workers.running == 0


@pytest.mark.slow
def test_a_worker_dies_with_its_server(room: list[Source], tmp_path: Path) -> None:
    """A process running compositions (the room server) is killed with SIGKILL while its
    worker mixes a long job: the worker dies too, so the restarted server's new run is the
    only writer, and no finished-looking output is left.  (Two things kill it: SIGKILL at
    once by ``PR_SET_PDEATHSIG``, and failing to send its next progress on the broken pipe;
    this test passes with either alone: it was seen passing with the first removed.)"""
    import signal
    import subprocess
    import sys
    import time

    from mixer_ext.roomserver.compose.spec import CompositionJob, encode_job

    # an hour of mostly silence: the encode alone keeps the worker busy for many seconds
    job = CompositionJob(tuple(room), tmp_path / "compositions" / "CJlong.mp4", "mp4",
                         ((0, 3600 * RATE),))  # fmt: skip
    (tmp_path / "recordings").mkdir()
    for s in room:  # the job's sources as media keys under tmp_path
        (tmp_path / "recordings" / f"{s.path.name}.mka").write_bytes(s.path.read_bytes())
    moved = tuple(
        Source(s.name, tmp_path / "recordings" / f"{s.path.name}.mka", s.offset, s.duration)
        for s in room
    )
    text = encode_job(CompositionJob(moved, job.output, job.format, job.segments), tmp_path)
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys\n"
            "from pathlib import Path\n"
            "from mixer_ext.roomserver.compose.spec import decode_job\n"
            "from mixer_ext.roomserver.compose.workers import CompositionWorkers\n"
            "job = decode_job(sys.argv[1], Path(sys.argv[2]))\n"
            "asyncio.run(CompositionWorkers(1).run(job))\n",
            text,
            str(tmp_path),
        ]
    )

    def children() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == server.pid:
                found.append(int(stat.parent.name))
        return found

    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "compositions").glob(".CJlong.mp4.*.part")):
            assert time.monotonic() < deadline, "the worker never started writing"
            assert server.poll() is None
            time.sleep(0.2)
        workers = children()
        assert workers
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "the worker outlived its server"
            time.sleep(0.1)
        assert not job.output.exists()
    finally:
        server.kill()
        server.wait(10)


def _decode_each(payloads: list[bytes], channels: int) -> np.ndarray:
    decoder = av.CodecContext.create("opus", "r")
    decoder.extradata = opus_head(channels)
    decoder.sample_rate = RATE
    decoder.layout = "stereo" if channels == 2 else "mono"
    # (channels, samples): planes side by side, however many samples a frame holds
    return np.concatenate(
        [f.to_ndarray() for p in payloads for f in decoder.decode(av.Packet(p))], axis=1
    )


@pytest.mark.parametrize(("bitrate", "channels"), [(32_000, 1), (256_000, 1), (96_000, 2)])
def test_joined_payloads_decode_to_the_same_samples(bitrate: int, channels: int) -> None:
    """Consecutive single-frame payloads joined into 120 ms packets (``opus_runs``) give
    FFmpeg's decoder the same frames: the samples are bit for bit those of one payload per
    call.  256 kbps payloads (~640 bytes) take the two-byte frame sizes (RFC 6716 3.2.1)."""
    payloads = encode_tone(733, 0.5, channels=channels, bitrate=bitrate).payloads  # 1 s
    assert all(opus_runs.joinable(p) for p in payloads)
    if bitrate == 256_000:
        assert min(len(p) for p in payloads) > 252
    run = opus_runs.max_run(payloads[0][0])
    assert run == 6  # 20 ms frames: 120 ms at most per packet
    joined = [opus_runs.join(payloads[k : k + run]) for k in range(0, len(payloads), run)]
    assert len(joined) < len(payloads)
    alone = _decode_each(payloads, channels)
    together = _decode_each(joined, channels)
    assert alone.shape == (channels, len(payloads) * FRAME)
    assert np.array_equal(alone, together)


def test_frame_sizes_and_run_lengths_follow_the_toc() -> None:
    assert [opus_runs.frame_samples(c << 3) for c in (0, 1, 2, 3)] == [480, 960, 1920, 2880]
    assert [opus_runs.frame_samples(c << 3) for c in (12, 13)] == [480, 960]
    assert [opus_runs.frame_samples(c << 3) for c in (16, 17, 18, 19)] == [120, 240, 480, 960]
    assert opus_runs.max_run(16 << 3) == 48  # 2.5 ms CELT: the 6-bit frame count caps it
    assert opus_runs.max_run(3 << 3) == 2  # 60 ms SILK
    assert not opus_runs.joinable(bytes([31 << 3 | 1, 0, 0]))  # code 1: two frames
    assert not opus_runs.joinable(bytes([31 << 3]) + bytes(1276))  # larger than a frame
    one = bytes([31 << 3, 1, 2, 3])
    assert opus_runs.join([one]) is one


def test_runs_change_no_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The composition and its levels are byte for byte those of one payload per decoder
    call (``max_run`` forced to 1), with offsets off the 20 ms grid so payloads straddle
    the 4 s blocks' edges, a DTX pause, a hole trimmed away, mp4 and webm."""
    sources = [
        record(tmp_path / "dave", 330, 0.013, [(0.0, 2.5), (3.3, 5.1)]),
        record(tmp_path / "erin", 1500, 3.991, [(0.0, 4.3)]),
        record(tmp_path / "fred", 2200, 10.507, [(0.0, 1.1)]),
    ]
    results = {}
    for fmt in ("mp4", "webm"):
        for how in ("runs", "alone"):
            if how == "alone":
                monkeypatch.setattr(opus_runs, "max_run", lambda toc: 1)
            out = tmp_path / how / f"c.{fmt}"
            result = compose(plan(sources, out, fmt=fmt, trim=True))
            assert result.levels is not None
            media = decode_timeline(out, keep_start=True) if fmt == "webm" else out.read_bytes()
            results[fmt, how] = (media, result.levels.read_bytes(), result.min_gain)
            monkeypatch.undo()
    mp4_runs, mp4_alone = results["mp4", "runs"], results["mp4", "alone"]
    assert mp4_runs == mp4_alone  # the AAC/MP4 file is deterministic: the same bytes
    webm_runs, webm_alone = results["webm", "runs"], results["webm", "alone"]
    # a WebM file carries a random segment UID: its decoded samples are compared
    assert np.array_equal(webm_runs[0], webm_alone[0]) and webm_runs[1:] == webm_alone[1:]
    assert tone_level(webm_runs[0], 1500, 5.0, 6.0) > 0.2  # erin is in there
