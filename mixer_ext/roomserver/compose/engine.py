"""The offline mix: a room's recordings decoded, placed by their offsets, summed, limited, encoded.

Runs in a worker process (``workers.py``), never in the room server's loop.  Per block of
``BLOCK_SAMPLES`` (4 s) of the composition's timeline, every source whose recording covers
it adds its decoded audio at its place (its offset + the payload's own timestamp, so DTX
and mute gaps and a track's absence are silence), the sum goes through the live mix's own
``Limiter`` (``core/mixer.py``: identity below full scale, a look-ahead limiter above,
carried from block to block) and the block is encoded once.

Where the cost goes (1 h of speech-like audio from 10 talkers): decoding the payloads
that carry speech (a DTX payload of at most 3 bytes is silence and is not decoded, as in
the live ``Input``), and the one encode.  Sources are decoded as the channels they carry
(a mono talker costs a mono decode), and the composition is mono when every source is
(what a browser or a talker sends), stereo when any source is stereo: a mono mix
duplicated into two channels would only double the encoder's work.  The AAC encoder is
FFmpeg's with ``aac_coder=fast``, the Opus one libopus.

Levels, as the live mix's timed metadata: each source's decoded audio also goes to a
``core.levels.LevelMeter`` per participant (the recording's ``PARTICIPANT`` tag) and
500 ms window of the composition, and the payloads (the live stream's own JSON, with
their times) are written beside the output as ``CJ…-levels.json`` (``write_levels``).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from mixer_ext.core.levels import LevelMeter
from mixer_ext.core.mixer import Limiter
from mixer_ext.core.payload import MAX_LEVEL, MUTED, MetadataPayload
from mixer_ext.roomserver.compose import opus_runs
from mixer_ext.roomserver.compose.spec import (
    SAMPLE_RATE,
    CompositionJob,
    Source,
    output_duration,
)
from mixer_ext.roomserver.recorder import opus_head

log = logging.getLogger(__name__)

BLOCK_SAMPLES = 4 * SAMPLE_RATE
#: the levels' window, as the live mix's timed metadata (500 ms)
LEVEL_WINDOW = SAMPLE_RATE // 2
#: an Opus payload this small is DTX / comfort noise: silence, not decoded
DTX_MAX_BYTES = 3
_TOC_STEREO = 0x04
_TIME_BASE = Fraction(1, SAMPLE_RATE)
_MS = Fraction(1, 1000)
#: bits per second per channel of the composition's audio
BITRATE = {"mp4": 64_000, "webm": 48_000}
_CODEC = {"mp4": ("aac", {"aac_coder": "fast"}), "webm": ("libopus", {})}
_MUXER = {"mp4": ("mp4", {"movflags": "+faststart"}), "webm": ("webm", {})}

FloatBlock = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CompositionResult:
    duration: float
    size: int
    channels: int
    #: lowest gain the limiter applied (1.0: the sum never reached full scale)
    min_gain: float
    #: the levels' sidecar file (``levels_path(job.output)``), written beside the output
    levels: Path | None = None


def levels_path(output: Path) -> Path:
    """Where a composition's levels go: ``CJ….mp4`` -> ``CJ…-levels.json``."""
    return output.with_name(f"{output.stem}-levels.json")


class _Levels:
    """Per-participant levels of the composition, by the live mix's rules (``core.levels``):
    for each 500 ms window of the composition's own timeline, each participant's peak
    absolute sample (0..32767) of its own audio before mixing, ``-1`` when none of its
    recordings covers any of the window.  One ``LevelMeter`` per participant and window
    (the readers fill a block's windows one after another, not in window order)."""

    def __init__(self) -> None:
        self.meters: dict[str, dict[int, LevelMeter]] = {}

    def _meter(self, identity: str, window: int) -> LevelMeter:
        windows = self.meters.setdefault(identity, {})
        meter = windows.get(window)
        if meter is None:
            meter = windows[window] = LevelMeter()
        return meter

    def present(self, identity: str, start: int, end: int) -> None:
        """``identity`` has a recording over output samples ``[start, end)``."""
        for w in range(start // LEVEL_WINDOW, (end - 1) // LEVEL_WINDOW + 1):
            self._meter(identity, w).add_peak(0)

    def add(self, identity: str, pieces: _Pieces) -> None:
        """Decoded pieces of ``identity``'s audio (floats, full scale 1.0).  A piece (one
        payload, 20 ms) counts in the window that holds its middle, as a live tick counts
        in one window; the peaks are taken in one numpy pass per run of payloads, not one
        per payload."""
        if not pieces:
            return
        windows, peaks = pieces.windows_and_peaks()
        starts = np.flatnonzero(np.r_[True, np.diff(windows) != 0])
        for w, peak in zip(windows[starts], np.maximum.reduceat(peaks, starts), strict=True):
            self._meter(identity, int(w)).add_peak(min(MAX_LEVEL, int(peak * 32768.0)))

    def payloads(self, total: int) -> list[MetadataPayload]:
        """One payload per window of a composition ``total`` samples long, stamped (``pts``)
        with the end of its window, as the live mix stamps its payloads."""
        windows = (total + LEVEL_WINDOW - 1) // LEVEL_WINDOW
        out = []
        for w in range(windows):
            levels = {}
            for identity, meters in sorted(self.meters.items()):
                meter = meters.get(w)
                levels[identity] = meter.take() if meter is not None else MUTED
            out.append(
                MetadataPayload(seq=w, levels=levels, pts=min(total, (w + 1) * LEVEL_WINDOW))
            )
        return out


class _Pieces:
    """One block's metered pieces of one source (a piece: one payload's audio, or the part
    of it inside the block), gathered as runs and single pieces; ``windows_and_peaks``
    takes every piece's window and peak in a few numpy passes per block."""

    __slots__ = ("run_at", "run_pcm", "run_per", "single_at", "single_pcm")

    def __init__(self) -> None:
        self.run_at: list[int] = []
        self.run_per: list[int] = []
        self.run_pcm: list[FloatBlock] = []
        self.single_at: list[int] = []
        self.single_pcm: list[FloatBlock] = []

    def add_run(self, at: int, per: int, pcm: FloatBlock) -> None:
        """``pcm`` holds ``len(pcm) // per`` whole pieces of ``per`` samples, the first at
        output sample ``at``."""
        self.run_at.append(at)
        self.run_per.append(per)
        self.run_pcm.append(pcm)

    def add_one(self, at: int, pcm: FloatBlock) -> None:
        self.single_at.append(at)
        self.single_pcm.append(pcm)

    def __bool__(self) -> bool:
        return bool(self.run_at or self.single_at)

    def windows_and_peaks(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Each piece's window (the one that holds its middle) and its peak (float)."""
        windows: list[npt.NDArray[np.int64]] = []
        peaks: list[npt.NDArray[np.float32]] = []
        by_per: dict[int, list[int]] = {}
        for k, per in enumerate(self.run_per):
            by_per.setdefault(per, []).append(k)
        for per, runs in by_per.items():
            pcm = np.concatenate([self.run_pcm[k] for k in runs])
            peaks.append(np.abs(pcm.reshape(len(pcm) // per, -1)).max(axis=1))
            counts = np.array([len(self.run_pcm[k]) // per for k in runs])
            first = np.cumsum(counts) - counts  # each run's first piece among all pieces
            index = np.arange(int(counts.sum()))
            at = np.repeat(np.array([self.run_at[k] for k in runs]), counts)
            windows.append(
                (at + per * (index - np.repeat(first, counts)) + per // 2) // LEVEL_WINDOW
            )
        if self.single_at:
            peaks.append(np.array([np.abs(p).max() for p in self.single_pcm], np.float32))
            windows.append(
                np.array(
                    [
                        (at + len(p) // 2) // LEVEL_WINDOW
                        for at, p in zip(self.single_at, self.single_pcm, strict=True)
                    ],
                    np.int64,
                )
            )
        return np.concatenate(windows), np.concatenate(peaks)


def write_levels(path: Path, payloads: list[MetadataPayload]) -> None:
    """The sidecar: ``{"sample_rate", "window", "payloads": [{"t", "payload"}]}``, where
    ``payload`` is the live stream's own JSON payload (``{"s", "p": {identity: {"v"}}}``)
    and ``t`` the composition time in seconds at which it takes effect (its window's end)."""
    doc = {
        "sample_rate": SAMPLE_RATE,
        "window": LEVEL_WINDOW / SAMPLE_RATE,
        "payloads": [
            {"t": p.pts / SAMPLE_RATE, "payload": json.loads(p.to_json())} for p in payloads
        ],
    }
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(part, path)


class _Reader:
    """One source's payloads in time order, decoded on demand into the blocks.

    Payloads that follow one another without a gap, single frames of one configuration,
    are decoded as one packet of up to 120 ms (``opus_runs``: the same samples, a third of
    the per-call cost).  A piece of audio is still one payload's: levels count it by its
    middle, and at a block's edges it is cut as it would be alone."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._container: Any = av.open(str(source.path))
        tags = {k.upper(): v for k, v in self._container.metadata.items()}
        #: whose audio this is (the recording's PARTICIPANT tag): the key of its levels
        self.identity: str = tags.get("PARTICIPANT") or source.name
        #: where the block being rendered starts, on the composition's own timeline
        self.out_start = 0
        self.levels: _Levels | None = None
        self._metered = _Pieces()
        stream = self._container.streams.audio[0]
        if stream.codec_context.name != "opus":
            raise ValueError(f"{source.path.name}: not an Opus recording")
        self._tb = stream.time_base
        #: the file's first packet as demuxed, when the container annotated it and it
        #: carries sound (Matroska's codec delay: the samples to skip): decoded as it is
        self._head: Any = None
        packets = self._demux(stream)
        # look ahead to the first payload (DTX is never seen): its TOC says mono or stereo
        first = next(packets, None)
        self.channels = 2 if first is not None and first[1][0] & _TOC_STEREO else 1
        self._packets = itertools.chain([first] if first is not None else [], packets)
        self._pending: tuple[int, bytes] | None = None
        self._decoder: Any = av.CodecContext.create("opus", "r")
        self._decoder.extradata = opus_head(self.channels)
        self._decoder.sample_rate = SAMPLE_RATE
        self._decoder.layout = "stereo" if self.channels == 2 else "mono"
        self._carry: tuple[int, FloatBlock] | None = None

    def _demux(self, stream: Any) -> Iterator[tuple[int, bytes]]:
        """``(sample on the room's timeline, payload)`` in file order, for the payloads that
        carry sound (a DTX payload is silence: it is not decoded, as in the live
        ``Input``); stops at a cut end."""
        offset = self.source.offset
        scale = Fraction(self._tb or _MS) * SAMPLE_RATE  # Matroska: 1 ms = 48 samples
        whole = scale.denominator == 1
        step = int(scale)
        packets = self._container.demux(stream)
        try:
            for packet in packets:
                pts = packet.pts
                if pts is None or packet.size == 0:
                    continue
                annotated = next(iter(packet.iter_sidedata()), None) is not None
                if annotated and packet.size > DTX_MAX_BYTES:
                    self._head = packet
                break
            else:
                return
            while True:
                size = packet.size
                if size > DTX_MAX_BYTES and pts is not None:
                    yield offset + (pts * step if whole else int(pts * scale)), bytes(packet)
                packet = next(packets)
                pts = packet.pts
        except (StopIteration, av.error.InvalidDataError, av.error.EOFError):
            return  # the end, or a truncated recording (a killed room server)

    def _decode(self, packet: Any) -> FloatBlock | None:
        try:
            frames = self._decoder.decode(packet)
        except av.error.InvalidDataError:
            return None  # a malformed payload: silence in its place
        if len(frames) == 1 and self.channels == 1:  # the usual case, in short
            f = frames[0]
            mono: FloatBlock = np.frombuffer(f.planes[0], np.float32, f.samples)[:, None]
            return mono
        if not frames:
            return None
        out: list[FloatBlock] = []
        for f in frames:
            n = f.samples
            # the planes as they are (fltp): cheaper than to_ndarray's stacking
            planes = [np.frombuffer(p, np.float32, n) for p in f.planes[: self.channels]]
            out.append(planes[0][:, None] if len(planes) == 1 else np.stack(planes, axis=1))
        return out[0] if len(out) == 1 else np.concatenate(out)

    def render(self, out: FloatBlock, start: int, end: int) -> None:
        """Add this source's audio for ``[start, end)`` of the room's timeline into ``out``
        (and its pieces to the levels)."""
        self._render(out, start, end)
        if self.levels is not None:
            self.levels.add(self.identity, self._metered)
            self._metered = _Pieces()

    def _render(self, out: FloatBlock, start: int, end: int) -> None:
        if self._carry is not None:
            at, pcm = self._carry
            self._carry = None
            self._add(out, start, end, at, pcm)
        packets = self._packets
        item = self._pending if self._pending is not None else next(packets, None)
        if self._head is not None and item is not None and item[0] < end:
            self._play(out, start, end, item[0], [item[1]], self._head)
            self._head = None
            item = next(packets, None)
        # the loop runs once per payload: kept to the bone (opus_runs.joinable inlined)
        mask, max_bytes = opus_runs.CONFIG_MASK, opus_runs.MAX_FRAME_BYTES + 1
        run: list[bytes] = []
        run_at = run_next = run_max = per = 0
        config = -1
        while item is not None:
            at, payload = item
            if at >= end:
                break
            toc = payload[0]
            if run and (at != run_next or toc & mask != config or len(run) == run_max):
                self._play(out, start, end, run_at, run)
                run = []
            if toc & 3 or len(payload) > max_bytes:  # several frames, or malformed: alone
                self._play(out, start, end, at, [payload])
            else:
                if not run:
                    run_at = run_next = at
                    config = toc & mask
                    per = opus_runs.frame_samples(toc)
                    run_max = opus_runs.max_run(toc)
                run.append(payload)
                run_next += per
            item = next(packets, None)
        self._pending = item
        if run:
            self._play(out, start, end, run_at, run)

    def _play(
        self,
        out: FloatBlock,
        start: int,
        end: int,
        at: int,
        run: list[bytes],
        packet: Any = None,
    ) -> None:
        """Decode ``run`` (payloads back to back from ``at``; or ``packet``, the one payload
        as demuxed) and add it as its pieces."""
        count = len(run)
        if packet is None:
            packet = av.Packet(opus_runs.join(run) if count > 1 else run[0])
        pcm = self._decode(packet)
        if pcm is None:
            if count > 1:  # a run the decoder refused: each payload on its own, as before
                per = opus_runs.frame_samples(run[0][0])
                for k, payload in enumerate(run):
                    self._play(out, start, end, at + k * per, [payload])
            return
        n = len(pcm)
        if count == 1:
            self._add(out, start, end, at, pcm)
            return
        per = n // count
        if n != count * opus_runs.frame_samples(run[0][0]):
            self._add(out, start, end, at, pcm)  # one piece (not expected of a run)
        elif start <= at and at + n <= end:
            out[at - start : at - start + n] += pcm
            if self.levels is not None:
                self._metered.add_run(self.out_start + at - start, per, pcm)
        else:  # at a block's edge: piece by piece, cut and carried as each alone
            for k in range(count):
                self._add(out, start, end, at + k * per, pcm[k * per : (k + 1) * per])

    def _add(self, out: FloatBlock, start: int, end: int, at: int, pcm: FloatBlock) -> None:
        """Add one piece, cut to ``[start, end)``; what lies past ``end`` is carried."""
        if at + len(pcm) <= start:
            return  # before this block (trimmed away)
        if at < start:
            pcm, at = pcm[start - at :], start
        n = min(len(pcm), end - at)
        if n > 0:
            out[at - start : at - start + n] += pcm[:n]
            if self.levels is not None:
                self._metered.add_one(self.out_start + at - start, pcm[:n])
        if n < len(pcm):
            self._carry = (at + max(n, 0), pcm[max(n, 0) :])

    def close(self) -> None:
        self._container.close()


def compose(
    job: CompositionJob, progress: Callable[[float], None] | None = None
) -> CompositionResult:
    """Mix ``job`` into ``job.output``; ``progress(fraction)`` after each block.

    The mix makes a great many short-lived objects (packets, frames, small arrays) and no
    reference cycles: the cyclic garbage collector is paused while it runs (about 3 % of
    the CPU otherwise) and set back as it was after."""
    readers: list[_Reader] = []
    collecting = gc.isenabled()
    gc.disable()
    try:
        for source in job.sources:
            readers.append(_Reader(source))
        channels = max((r.channels for r in readers), default=1)
        return _mix(job, readers, channels, progress)
    finally:
        for r in readers:
            with contextlib.suppress(Exception):
                r.close()
        if collecting:
            gc.enable()


def _mix(
    job: CompositionJob,
    readers: list[_Reader],
    channels: int,
    progress: Callable[[float], None] | None,
) -> CompositionResult:
    total = output_duration(job)
    layout = "stereo" if channels == 2 else "mono"
    fmt, mux_options = _MUXER[job.format]
    codec, codec_options = _CODEC[job.format]
    job.output.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name and renamed when complete: a reader never sees half a
    # file, and a run killed with its server leaves no file a new run could collide with
    part = job.output.with_name(f".{job.output.name}.{os.getpid()}.part")
    limiter = Limiter(tick_samples=BLOCK_SAMPLES, channels=channels)
    levels = _Levels()
    for reader in readers:
        reader.levels = levels
    done = 0
    with av.open(str(part), "w", format=fmt, options=mux_options) as container:
        stream: Any = container.add_stream(codec, rate=SAMPLE_RATE, layout=layout)
        stream.codec_context.bit_rate = BITRATE[job.format] * channels
        stream.codec_context.options = codec_options
        buf: FloatBlock = np.zeros((BLOCK_SAMPLES, channels), np.float32)
        for seg_start, seg_end in job.segments:
            at = seg_start
            while at < seg_end:
                end = min(at + BLOCK_SAMPLES, seg_end)
                n = end - at
                block = buf[:n]
                block.fill(0.0)
                for reader in readers:
                    src = reader.source
                    if src.end > at and src.offset < end:
                        reader.out_start = done
                        lo, hi = max(at, src.offset), min(end, src.end)
                        levels.present(reader.identity, done + lo - at, done + hi - at)
                        reader.render(block, at, end)
                mix = np.rint(block * 32768.0).astype(np.int32)
                pcm = limiter.process(mix)
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=layout
                )
                frame.sample_rate = SAMPLE_RATE
                frame.pts = done
                frame.time_base = _TIME_BASE
                for packet in stream.encode(frame):
                    container.mux(packet)
                done += n
                at = end
                if progress is not None:
                    progress(done / total if total else 1.0)
        for packet in stream.encode(None):
            container.mux(packet)
    sidecar = levels_path(job.output)
    write_levels(sidecar, levels.payloads(done))
    os.replace(part, job.output)
    return CompositionResult(
        duration=done / SAMPLE_RATE,
        size=job.output.stat().st_size,
        channels=channels,
        min_gain=limiter.min_gain,
        levels=sidecar,
    )
