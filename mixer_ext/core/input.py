"""One mixer input per subscribed audio track: encoded (or decoded) frames in, one tick out.

Encoded path (what the connectors give, issue 13.1): ``push_encoded`` buffers each
RTP payload as it arrives, stamped with its arrival; ``decode_pending``, called by
the mixer's tick for every input in turn, decodes them in sequence order with one
libopus decoder per input (mono when the sender is mono: the TOC byte says so;
stereo only at the mix), right before the pull.  Silence costs next to nothing:
an Opus payload of at most ``DTX_MAX_BYTES`` (DTX, comfort noise) is never decoded
(no samples: the jitter buffer treats it as the pause it is), and a muted input's
payloads are dropped undecoded.  Up to ``PLC_MAX_FRAMES`` missing packets (a
sequence gap whose timestamps say "lost", not "paused") are filled by the decoder's
own concealment (libopus PLC: a TOC-only packet) before the jitter buffer's fade
takes over.  Non-Opus payloads (G.711 from a Janus publisher) go through aiortc's
decoder for that codec and the decoded path below.

Decoded path: ``push`` takes decoded ``av.AudioFrame`` objects (a reader task feeds it in tests
and simulations); the mixer pulls exactly one tick per tick.  Frames may come in any sample
rate, layout and format: they are resampled once to 48 kHz stereo s16 and
re-stamped on a 48 kHz pts line (the resampler's own pts are not used, so a
sender's pts jump across a DTX/mute gap survives resampling).  The jitter
buffer, concealment and drift handling live in ``JitterBuffer``
(``mixer_ext.core.jitter``), whose stats this class exposes as attributes.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from mixer_ext.core.frames import SAMPLE_RATE, TICK_SAMPLES, Int16Block
from mixer_ext.core.jitter import JitterBuffer
from mixer_ext.settings import JitterBufferSize

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

#: a resampled stream whose next pts is this far off (1 ms) restarts its resampler
_RESAMPLE_RESTART_SAMPLES = 48
_RTP_RANGE = 1 << 32
_HALF_RTP_RANGE = 1 << 31
_SEQ_RANGE = 1 << 16
_HALF_SEQ_RANGE = 1 << 15

#: an Opus payload this small is DTX or comfort noise (libopus sends 1-3 bytes for silence)
DTX_MAX_BYTES = 3
#: at most this many missing packets in a row are concealed by the decoder (libopus PLC)
PLC_MAX_FRAMES = 3
#: a sequence gap up to this many packets, with timestamps to match, is loss (not a pause)
LOSS_MAX_PACKETS = 6
#: encoded payloads held between two ticks at most (1.28 s); beyond, the oldest drop
PENDING_MAX = 64
#: the Opus TOC byte's stereo flag (RFC 6716, 3.1)
_TOC_STEREO = 0x04
_by_seq = itemgetter(0)


def _downmix(block: Int16Block) -> Int16Block:
    """Stereo to mono (the mean), for a stereo frame on an input buffered as mono."""
    return np.ascontiguousarray(block.mean(axis=1, keepdims=True).round().astype(np.int16))


class Input(JitterBuffer):
    """One audio track feeding the mix.

    ``push(frame, arrival)``: ``arrival`` is when the frame arrived, in
    seconds on the mixer timeline (tick ``n`` runs at ``n * 0.020``), as the
    clock runner measures it; ``None`` means "before the next tick".  Frames
    without a pts continue the previous one; a pts that falls back by more
    than 2**31 is a wrapped 32-bit RTP timestamp and is unwrapped.  ``pull()`` is
    ``JitterBuffer.pull``: int16 ``(960, 2)`` every tick, silence when empty.
    """

    def __init__(
        self,
        jitter: JitterBufferSize = JitterBufferSize.MEDIUM,
        *,
        tick_samples: int = TICK_SAMPLES,
        start_tick: int = 0,
    ) -> None:
        super().__init__(
            jitter.milliseconds * SAMPLE_RATE // 1000,
            tick_samples=tick_samples,
            start_tick=start_tick,
            adaptive=jitter is JitterBufferSize.ADAPTIVE,
        )
        self.jitter = jitter
        self._resampler: av.AudioResampler | None = None
        self._in_next: int | None = None  # 48 kHz pts the next input frame should have
        self._out_next = 0  # 48 kHz pts of the resampler's next output sample
        self._channels = 2  # of the resampler's output (mono is duplicated after it)
        self._unwrap = 0  # added to pts after a 32-bit RTP timestamp wrapped
        # encoded path: (seq, pts, payload, codec, arrival samples) since the last tick
        self._pending: list[tuple[int, int, bytes, Any, float | None]] = []
        self._seq_raw: int | None = None  # last RTP sequence number seen, and unwrapped
        self._seq_ext = 0
        self._ts_raw = 0  # last RTP timestamp seen, and unwrapped
        self._ts_ext = 0
        self._opus: Any = None  # av.AudioCodecContext (libopus), made at the first frame
        self._other: Any = None  # aiortc decoder for a non-Opus codec
        self._next_seq: int | None = None  # the sequence number after the last decoded one
        self._next_pts = 0  # and where its samples would start
        self._frame_samples = TICK_SAMPLES
        self._toc = 0  # TOC byte of the last decoded Opus payload (for PLC)
        self._talking = False  # the last payload was speech (not DTX, not muted): PLC may run
        self._plc_run = 0  # packets concealed by PLC since the last one decoded
        #: Opus channels decoded (1 or 2; 0 before the first frame)
        self.decoded_channels = 0
        #: payloads seen as DTX/comfort noise and not decoded
        self.dtx_frames = 0
        #: payloads of a muted input dropped undecoded
        self.skipped_frames = 0
        #: missing packets concealed by the decoder's PLC
        self.plc_frames = 0
        #: payloads the decoder refused (a malformed peer)
        self.malformed_frames = 0
        #: payloads dropped because more than PENDING_MAX piled up between two ticks
        self.overflow_frames = 0

    # ------------------------------------------------------------------ encoded path
    def push_encoded(
        self, codec: Any, seq: int, timestamp: int, payload: bytes, arrival: float | None = None
    ) -> None:
        """Buffer one RTP payload (not decoded yet); ``arrival`` in seconds as for ``push``.

        ``codec`` is aiortc's ``RTCRtpCodecParameters`` (``.name``, ``.clockRate``).
        16-bit sequence numbers and 32-bit timestamps are unwrapped here.
        """
        if self._seq_raw is None:
            self._seq_ext = seq
            self._ts_ext = timestamp
        else:
            d = (seq - self._seq_raw) & (_SEQ_RANGE - 1)
            self._seq_ext += d - _SEQ_RANGE if d >= _HALF_SEQ_RANGE else d
            t = (timestamp - self._ts_raw) & (_RTP_RANGE - 1)
            self._ts_ext += t - _RTP_RANGE if t >= _HALF_RTP_RANGE else t
        self._seq_raw = seq
        self._ts_raw = timestamp
        pending = self._pending
        pending.append(
            (
                self._seq_ext,
                self._ts_ext,
                payload,
                codec,
                None if arrival is None else arrival * SAMPLE_RATE,
            )
        )
        if len(pending) > PENDING_MAX:
            del pending[0]
            self.overflow_frames += 1

    def decode_pending(self, decode: bool = True) -> None:
        """Decode what ``push_encoded`` buffered since the last call, in sequence order.

        ``decode`` False (a muted input): drop it undecoded.  Called by the mixer's
        tick right before ``pull()``.
        """
        pending = self._pending
        if not pending:
            if decode and self._talking:
                self._plc_if_due()
            return
        self._pending = []
        if not decode:
            self.skipped_frames += len(pending)
            self._next_seq = None  # no concealment across a mute
            self._talking = False
            return
        if len(pending) > 1:
            pending.sort(key=_by_seq)
        import av

        for seq, pts, payload, codec, arrival in pending:
            if codec.name.lower() != "opus":
                self._decode_other(codec, pts, payload, arrival)
                continue
            if len(payload) <= DTX_MAX_BYTES:
                self.dtx_frames += 1
                if self._next_seq is None or seq >= self._next_seq:
                    self._next_seq = seq + 1
                    self._next_pts = pts + self._frame_samples
                    self._talking = False  # a pause, not a loss: nothing to conceal
                continue
            dec = self._opus
            if dec is None:
                dec = self._opus = self._new_opus(payload[0])
            nxt = self._next_seq
            if nxt is not None:
                missing = seq - nxt
                if (
                    0 < missing <= LOSS_MAX_PACKETS
                    and pts - self._next_pts == missing * self._frame_samples
                    and self._talking
                ):
                    self._plc(min(missing, PLC_MAX_FRAMES - self._plc_run), arrival)
            try:
                frames = dec.decode(av.Packet(payload))
            except (av.FFmpegError, ValueError):
                self.malformed_frames += 1
                continue
            end = pts
            for frame in frames:
                end = self._push_decoded(end, frame, arrival)
            if nxt is None or seq >= nxt:
                self._next_seq = seq + 1
                self._next_pts = end
                if end > pts:
                    self._frame_samples = end - pts
                self._toc = payload[0]
                self._talking = True
                self._plc_run = 0
        if self._talking:
            self._plc_if_due()
        del av

    def _plc_if_due(self) -> None:
        """The next pull would run dry while talking: the decoder conceals the next packet.

        At most ``PLC_MAX_FRAMES`` in a row; then the jitter buffer's fade takes over.
        """
        if (
            self._plc_run < PLC_MAX_FRAMES
            and self._anchored
            and self._newest_end < self._play + self.tick_samples
            and self._next_pts + self._frame_samples > self._play
        ):
            self._plc(1, None)

    def _new_opus(self, toc: int) -> Any:
        import av

        channels = 2 if toc & _TOC_STEREO else 1
        if channels == 1 and not self.frames_received and not self._anchored:
            self.set_channels(1)  # buffered mono; upmixed only as it enters the mix
        ctx = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo" if channels == 2 else "mono"
        ctx.format = "s16"
        self.decoded_channels = channels
        return ctx

    def _push_decoded(
        self, pts: int, frame: av.AudioFrame, arrival: float | None, measured: bool = True
    ) -> int:
        n = frame.samples
        if n == 0:
            return pts
        ch = self.decoded_channels
        block: Int16Block = np.frombuffer(memoryview(frame.planes[0]), np.int16, ch * n).reshape(
            n, ch
        )
        if ch != self.channels:  # mono into a buffer that was stereo already: both ears
            block = np.repeat(block, 2, axis=1) if ch == 1 else _downmix(block)
        self.push_samples(pts, block, arrival, measured=measured)
        return pts + n

    def _plc(self, frames: int, arrival: float | None) -> None:
        """Conceal the next ``frames`` packets with the decoder's PLC (a TOC-only payload).

        Packets whose time has already been played (the buffer concealed them) are
        skipped, not decoded; each one concealed counts as lost (and as reordered, not
        lost, if it turns up later after all).
        """
        import av

        dec = self._opus
        if dec is None or self._next_seq is None:
            return
        plc = bytes([self._toc])
        n = self._frame_samples
        for _ in range(max(0, frames)):
            pts = self._next_pts
            if pts + n > self._play:
                try:
                    end = pts
                    for frame in dec.decode(av.Packet(plc)):
                        end = self._push_decoded(end, frame, arrival, measured=False)
                except (av.FFmpegError, ValueError):
                    return
                if end == pts:
                    return
                self.frames_received -= 1  # not received: made up
                self.plc_frames += 1
                self.lost_frames += 1
                self._plc_run += 1
            self._next_seq += 1
            self._next_pts = pts + n
        del av

    def _decode_other(self, codec: Any, pts: int, payload: bytes, arrival: float | None) -> None:
        """A non-Opus payload: aiortc's decoder for the codec, then the decoded path."""
        import av
        from aiortc.codecs import get_decoder
        from aiortc.jitterbuffer import JitterFrame

        if self._other is None or self._other[0] != codec.name:
            self._other = (codec.name, get_decoder(codec))
        try:
            frames = self._other[1].decode(JitterFrame(payload, pts & (_RTP_RANGE - 1)))
        except (av.FFmpegError, ValueError):
            self.malformed_frames += 1
            return
        seconds = None if arrival is None else arrival / SAMPLE_RATE
        for frame in frames:
            if isinstance(frame, av.AudioFrame):
                self.push(frame, seconds)

    def push(self, frame: av.AudioFrame, arrival: float | None = None) -> None:
        """Resample (if needed), re-stamp and buffer one decoded frame."""
        if frame.samples == 0:
            return
        tb = frame.time_base
        if frame.pts is None or tb is None:
            pts = self._in_next if self._in_next is not None else 0
        elif tb.numerator == 1 and tb.denominator == SAMPLE_RATE:  # aiortc's Opus: no Fractions
            pts = frame.pts + self._unwrap
        else:
            pts = round(frame.pts * tb * SAMPLE_RATE) + self._unwrap
        if self._in_next is not None and pts < self._in_next - _HALF_RTP_RANGE:
            # aiortc hands out the 32-bit RTP timestamp: it wraps every 24.9 h at 48 kHz
            self._unwrap += _RTP_RANGE
            pts += _RTP_RANGE
        arrival_samples = None if arrival is None else arrival * SAMPLE_RATE
        rate = frame.sample_rate
        n = frame.samples
        expected = self._in_next
        self._in_next = pts + (n if rate == SAMPLE_RATE else (n * SAMPLE_RATE) // rate)
        if rate == SAMPLE_RATE and frame.format.name == "s16" and frame.layout.name == "stereo":
            # packed s16 stereo (aiortc's decoder output): read the plane as it is
            plane = memoryview(frame.planes[0])
            packed: Int16Block = np.frombuffer(plane, np.int16, 2 * n).reshape(n, 2)
            if self.channels == 1:
                packed = _downmix(packed)
            self.push_samples(pts, packed, arrival_samples)
            return
        import av

        if (
            self._resampler is None
            or expected is None
            or abs(pts - expected) > _RESAMPLE_RESTART_SAMPLES
        ):
            self._new_resampler(pts, frame)
        if self._resampler is None:  # an invariant of this class
            raise RuntimeError("internal: self._resampler not set")
        try:
            out = self._resampler.resample(frame)
        except ValueError:  # format/rate/layout changed mid-stream
            self._new_resampler(pts, frame)
            if self._resampler is None:  # an invariant of this class
                raise RuntimeError("internal: self._resampler not set") from None
            out = self._resampler.resample(frame)
        for o in out:
            raw = np.asarray(o.to_ndarray(), dtype=np.int16).reshape(-1, self._channels)
            if self._channels == 1 and self.channels == 2:  # heard in both ears, own level
                raw = np.repeat(raw, 2, axis=1)
            elif self._channels == 2 and self.channels == 1:
                raw = _downmix(raw)
            samples: Int16Block = np.ascontiguousarray(raw)
            self.push_samples(self._out_next, samples, arrival_samples)
            self._out_next += len(samples)
        del av

    def _new_resampler(self, pts: int, frame: av.AudioFrame) -> None:
        import av

        self._channels = 1 if len(frame.layout.channels) == 1 else 2
        layout = "mono" if self._channels == 1 else "stereo"
        self._resampler = av.AudioResampler(format="s16", layout=layout, rate=SAMPLE_RATE)
        self._out_next = pts
