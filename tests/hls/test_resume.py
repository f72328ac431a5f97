"""Issue 16.7 at the writer: a killed run's directory is continued, never restarted.

A first writer is abandoned mid-segment (what SIGKILL leaves: no close, parts of
an open segment advertised), a second one opens the same directory.  Real AAC,
both playlist kinds and both playlist types.  The worker-level test with a real
process and SIGKILL is ``test_worker_restart.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mixer_ext.hls.playlist import parse_media_playlist
from mixer_ext.hls.tspart import AudioPacket
from mixer_ext.hls.writer import PartedStreamWriter
from tests.support.llhls_util import encode_tone

Aac = tuple[list[AudioPacket], bytes, int]


@pytest.fixture(scope="module")
def aac() -> Aac:
    return encode_tone()


def writer(directory: Path, aac: Aac, low_latency: bool, window: int | None) -> PartedStreamWriter:
    _packets, extradata, rate = aac
    w = PartedStreamWriter(
        directory,
        extradata=extradata,
        bit_rate=rate,
        part_target=0.2 if low_latency else None,
        segment_duration=0.5,
        window=window,
    )
    w.open()
    return w


def files(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.iterdir()
        if p.suffix == ".ts"
    }


@pytest.mark.parametrize("window", [None, 3], ids=["event", "live"])
@pytest.mark.parametrize("low_latency", [True, False], ids=["llhls", "plain"])
def test_a_second_writer_continues_a_killed_one(
    tmp_path: Path, aac: Aac, low_latency: bool, window: int | None
) -> None:
    packets = aac[0]
    w1 = writer(tmp_path, aac, low_latency, window)
    for p in packets[:-20]:  # stops mid-segment, never closed: killed
        w1.audio(p)
    before = parse_media_playlist(w1.playlist_path.read_text())
    shown = files(tmp_path)
    listed = {s.uri for s in before.segments} | {p.uri for p in before.open_parts}
    listed |= {p.uri for s in before.segments for p in s.parts}

    w2 = writer(tmp_path, aac, low_latency, window)
    assert w2.resumed
    for p in packets:  # the new process's timeline starts again at the priming pts
        w2.audio(p)
    w2.close(end_of_stream=True)
    after = parse_media_playlist(w2.playlist_path.read_text())
    assert after.ended
    now = files(tmp_path)
    for name in listed & now.keys():  # a name shown before keeps its bytes
        assert now[name] == shown[name], name
    first = after.media_sequence
    assert [s.sequence for s in after.segments] == list(range(first, first + len(after.segments)))
    assert [int(s.uri[4:10]) for s in after.segments] == [s.sequence for s in after.segments]
    marked = [s.sequence for s in after.segments if s.discontinuity]
    old_last = before.next_sequence if before.open_parts else before.next_sequence - 1
    if marked:
        assert marked == [old_last + 1]
    else:  # it slid out of the live window: the count says it was there
        assert window is not None and after.discontinuity_sequence == 1
    assert max(s.sequence for s in after.segments) > old_last + 2
    tags = {line for line in w2.playlist_path.read_text().splitlines() if "TARGETDURATION" in line}
    assert tags == {"#EXT-X-TARGETDURATION:1"}
    if window is not None:  # the killed run's old files do not pile up
        assert len([n for n in now if n.startswith("seg-")]) <= 2 * window + 1


def test_a_finished_playlist_is_not_continued_but_numbering_goes_on(
    tmp_path: Path, aac: Aac
) -> None:
    w1 = writer(tmp_path, aac, True, None)
    for p in aac[0]:
        w1.audio(p)
    w1.close(end_of_stream=True)
    last = parse_media_playlist(w1.playlist_path.read_text()).segments[-1].sequence
    w2 = writer(tmp_path, aac, True, None)
    assert not w2.resumed
    for p in aac[0]:
        w2.audio(p)
    w2.close(end_of_stream=True)
    after = parse_media_playlist(w2.playlist_path.read_text())
    assert after.media_sequence == last + 1
    assert not any(s.discontinuity for s in after.segments)
