"""HLS output read back as a player would: playlist, TS segments, AAC, timed ID3."""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import shutil
import threading
from pathlib import Path

import av
import pytest

from mixer_ext.context import parse_output
from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES
from mixer_ext.core.payload import MetadataPayload
from mixer_ext.encode.fanout import OutputPipeline
from mixer_ext.errors import MixerError
from mixer_ext.hls.playlist import MediaPlaylist, Segment
from mixer_ext.outputs.carriers import parse_id3_txxx
from mixer_ext.settings import HlsPlaylistType, Settings
from mixer_ext.testing.feed import TONE_HZ, feed, payload_for, ts_pmt_stream_types
from mixer_ext.testing.spectrum import tone_levels
from tests.support.hls_reader import playlist_segments, read_hls

BITRATE = 96


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(hls_dir=tmp_path / "hls", **kw)  # type: ignore[arg-type]


def audio_bitrate(blob: bytes) -> float:
    """Bits per second of the AAC payload (packet sizes over the stream's duration)."""
    total = 0
    first = last = None
    with av.open(io.BytesIO(blob), format="mpegts") as c:
        stream = c.streams.audio[0]
        time_base = stream.time_base  # PyAV 18.1 refuses stream attributes once closed
        for pkt in c.demux(stream):
            if pkt.size == 0 or pkt.pts is None:
                continue
            total += pkt.size
            first = pkt.pts if first is None else first
            last = pkt.pts + (pkt.duration or 1024)
    assert first is not None and last is not None
    assert time_base is not None
    return total * 8 / float((last - first) * time_base)


@pytest.mark.slow
async def test_hls_as_a_player_reads_it(tmp_path: Path) -> None:
    s = settings(tmp_path, hls_playlist_type=HlsPlaylistType.EVENT)
    pipeline = OutputPipeline([parse_output("hls:main")], BITRATE, s)
    await pipeline.start()
    directory = tmp_path / "hls" / "main"

    # A reader polling the playlist while it is rewritten must never see it torn.
    torn: list[str] = []
    reads = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal reads
        path = directory / "index.m3u8"
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            reads += 1
            lines = text.splitlines()
            ok = text.startswith("#EXTM3U\n") and text.endswith("\n")
            ok = ok and all(seg.endswith(".ts") for seg in playlist_segments(text))
            ok = ok and all(
                lines[i + 1].startswith("seg-")
                for i, ln in enumerate(lines)
                if ln.startswith("#EXTINF")
            )
            if not ok:
                torn.append(text)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    seconds = 9.0
    await feed(pipeline, seconds, rich=True)
    await pipeline.close(end_of_stream=True)
    stop.set()
    poller.join(5)
    assert not torn, f"torn playlist read: {torn[0]!r}"
    assert reads > 10

    hls = read_hls(directory)
    assert hls.ended, "no #EXT-X-ENDLIST after a normal end"
    assert "#EXT-X-PROGRAM-DATE-TIME:" in hls.playlist
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in hls.playlist
    assert hls.codec == "aac" and hls.sample_rate == SAMPLE_RATE
    assert len(hls.segments) == 5  # 2 s segments, 9 s of audio
    # the whole mix came through, tone intact
    assert abs(hls.duration - seconds) < 0.1
    assert tone_levels(hls.audio, SAMPLE_RATE, [TONE_HZ])[TONE_HZ] > 0.15

    blob = b"".join((directory / seg).read_bytes() for seg in hls.segments)
    rate = audio_bitrate(blob)
    assert abs(rate - BITRATE * 1000) <= 0.1 * BITRATE * 1000, rate
    # every segment declares AAC (0x0f) and timed ID3 (0x15) in its PMT
    for seg in hls.segments:
        types = sorted(ts_pmt_stream_types((directory / seg).read_bytes()).values())
        assert types == [0x0F, 0x15], f"{seg}: {types}"

    # every payload, in order, each TXXX a valid payload, 500 ms apart (±1 tick)
    seqs = [p.seq for _t, p in hls.payloads]
    assert seqs == list(range(int(seconds / 0.5)))
    assert [p.levels for _t, p in hls.payloads] == [payload_for(i).levels for i in seqs]
    times = [t for t, _p in hls.payloads]
    tick = TICK_SAMPLES / SAMPLE_RATE
    for a, b in itertools.pairwise(times):
        assert abs((b - a) - 0.5) <= tick + 1e-6
    # and in sync with the audio: payload n sits at the end of the window it describes,
    # (n + 1) * 0.5 s of stream time (issue 26)
    audio_zero = hls.audio_start + 1024 / SAMPLE_RATE
    assert abs(times[0] - (audio_zero + 0.5)) <= tick


async def test_live_playlist_slides_and_deletes_old_segments(tmp_path: Path) -> None:
    s = settings(tmp_path, hls_segment_duration=0.5, hls_list_size=3)
    pipeline = OutputPipeline([parse_output("hls:live")], 64, s)
    await pipeline.start()
    await feed(pipeline, 6.0)
    await pipeline.close(end_of_stream=False)
    directory = tmp_path / "hls" / "live"
    text = (directory / "index.m3u8").read_text()
    segs = playlist_segments(text)
    assert len(segs) == 3
    assert "#EXT-X-ENDLIST" not in text  # not a normal end
    assert "#EXT-X-PLAYLIST-TYPE" not in text
    first_seq = int(text.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])
    assert segs[0] == f"seg-{first_seq:06d}.ts"
    on_disk = sorted(p.name for p in directory.glob("seg-*.ts"))
    # the window plus one more window kept for players still fetching; the rest deleted
    assert len(on_disk) == 6 and on_disk[-3:] == segs
    assert "seg-000001.ts" not in on_disk


@pytest.mark.slow
async def test_id3_packets_parse_in_every_segment(tmp_path: Path) -> None:
    pipeline = OutputPipeline([parse_output("hls:x")], 64, settings(tmp_path))
    await pipeline.start()
    await feed(pipeline, 4.0)
    await pipeline.close()
    for seg in sorted((tmp_path / "hls" / "x").glob("seg-*.ts")):
        with av.open(str(seg)) as c:
            data = [s for s in c.streams if s.type == "data"]
            assert data, f"{seg.name} has no data stream"
            n = 0
            for pkt in c.demux(data[0]):
                if pkt.size:
                    (frame,) = parse_id3_txxx(bytes(pkt))
                    MetadataPayload.from_json(frame[1])
                    n += 1
            if float(c.duration or 0) / 1e6 >= 0.5:  # the flush's short tail may have none
                assert n >= 1, f"{seg.name} carries no ID3 tag"


async def test_unwritable_hls_dir_fails_that_output_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "hls"
    blocker.write_text("a file where the HLS directory should be")
    rec = tmp_path / "rec.m4a"
    pipeline = OutputPipeline(
        [parse_output("hls:main"), parse_output(f"file:{rec}")], 64, settings(tmp_path)
    )
    await pipeline.start()
    await feed(pipeline, 1.0)
    await pipeline.close()
    status = {o["label"]: o for o in pipeline.status()["outputs"]}
    assert status["hls:main"]["state"] == "failed"
    assert "not writable" in status["hls:main"]["error"]
    assert status[f"file:{rec}"]["state"] == "closed"
    assert rec.stat().st_size > 1000
    assert any("hls:main failed" in r.getMessage() for r in caplog.records)


async def test_disk_error_mid_run_fails_hls_and_the_rest_goes_on(tmp_path: Path) -> None:
    rec = tmp_path / "rec.ts"
    pipeline = OutputPipeline(
        [parse_output("hls:main"), parse_output(f"file:{rec}")], 64, settings(tmp_path)
    )
    await pipeline.start()
    directory = tmp_path / "hls" / "main"
    await feed(pipeline, 1.0)
    # The directory vanishes under the output (a real OS error on the next segment,
    # whoever runs the test: chmod would not stop root).
    shutil.rmtree(directory)
    directory.write_text("no longer a directory")
    next_tick = await feed(pipeline, 3.0, first_tick=50)
    await feed(pipeline, 1.0, first_tick=next_tick)
    await pipeline.close()
    status = {o["label"]: o for o in pipeline.status()["outputs"]}
    assert status["hls:main"]["state"] == "failed"
    # one line naming the file and the OS reason (which of the two depends on timing)
    assert re.fullmatch(
        # LL-HLS (the default) writes parts, plain HLS whole segments
        r"cannot write \S+/hls/main/(seg-\d{6}|part-\d{6}-\d+)\.ts: "
        r"(Not a directory|No such file or directory)",
        status["hls:main"]["error"],
    ), status["hls:main"]["error"]
    assert status[f"file:{rec}"]["state"] == "closed"
    with av.open(str(rec)) as c:
        assert float(c.duration or 0) / 1e6 == pytest.approx(5.0, abs=0.1)


async def test_every_output_failing_raises(tmp_path: Path) -> None:
    (tmp_path / "hls").write_text("not a directory")
    pipeline = OutputPipeline(
        [parse_output("hls:a"), parse_output("hls:b")], 64, settings(tmp_path)
    )
    with pytest.raises(MixerError, match="every output failed"):
        await pipeline.start()
    await pipeline.close()


def test_bitrate_out_of_range_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MixerError, match="outside 32-320 kbps"):
        OutputPipeline([parse_output("hls:a")], 16, settings(tmp_path))


def test_playlist_target_duration_never_below_rounded_extinf() -> None:
    from datetime import UTC, datetime

    pl = MediaPlaylist(2.0, window=2)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for i, d in enumerate([2.02, 2.6, 2.0]):
        pl.add(Segment(f"seg-{i + 1:06d}.ts", d, now, i + 1))
    text = pl.render()
    assert "#EXT-X-TARGETDURATION:3" in text
    assert "#EXT-X-MEDIA-SEQUENCE:2" in text
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z" in text


@pytest.mark.slow
async def test_on_mix_never_blocks_when_encoder_is_behind(tmp_path: Path) -> None:
    pipeline = OutputPipeline([parse_output("hls:a")], 64, settings(tmp_path))
    await pipeline.start()
    from mixer_ext.testing.feed import sine_frame

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for tick in range(2000):  # 40 s of audio handed over at once
        pipeline.on_mix(sine_frame(tick))
    assert loop.time() - t0 < 5.0
    await pipeline.close()
    st = pipeline.status()["encoder"]
    assert st["frames_encoded"] + st["dropped_frames"] == 2000
