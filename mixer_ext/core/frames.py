"""The units every stage of the pipeline agrees on.

Timestamps are sample counts at 48 kHz (``time_base = 1/48000``) from the
start of the stream; the mixer clock ticks every 20 ms = 960 samples and a
metadata payload covers 25 ticks = 500 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import av

    from mixer_ext.core.payload import TimedPayload

SAMPLE_RATE = 48_000
CHANNELS = 2
TIME_BASE = Fraction(1, SAMPLE_RATE)
#: one mixer tick
TICK_SECONDS = 0.020
TICK_SAMPLES = 960
#: one metadata window: 25 ticks
PAYLOAD_SECONDS = 0.5
TICKS_PER_PAYLOAD = 25
PAYLOAD_SAMPLES = TICK_SAMPLES * TICKS_PER_PAYLOAD

Int16Block = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class MixedFrame:
    """One tick of the mix.

    ``samples`` is int16, shape ``(TICK_SAMPLES, CHANNELS)`` (interleaved
    when flattened); ``pts`` is the sample index of its first sample.
    """

    pts: int
    samples: Int16Block
    #: the timeline jumped before this frame: the clock re-anchored after a stall, or
    #: frames before it were dropped (the outputs mark it; HLS: EXT-X-DISCONTINUITY)
    discontinuity: bool = False

    def to_av_frame(self) -> av.AudioFrame:
        """A packed s16 stereo 48 kHz ``av.AudioFrame`` stamped with ``pts``."""
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(self.samples).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.pts
        frame.time_base = TIME_BASE
        return frame


class MixSink(Protocol):
    """What the clock runner hands its output to (the encoder stage).

    Both calls are made on the event loop from inside a tick: they must
    return at once (hand off to a bounded queue, never do I/O).
    """

    def on_mix(self, frame: MixedFrame) -> None: ...

    def on_payload(self, payload: TimedPayload) -> None: ...


#: ``sink(codec, sequence_number, rtp_timestamp, payload)``: one received RTP payload
#: (``codec`` is aiortc's ``RTCRtpCodecParameters``: ``.name``, ``.clockRate``)
PacketSink = Callable[[Any, int, int, bytes], None]


class EncodedSource(Protocol):
    """A subscribed track's encoded frames (``mixer_ext.connectors.rtptap.EncodedFeed``).

    The mixer clock ``connect``\\ s its input's sink; ``close`` stops delivery.  Calls
    come on the event loop, one per RTP packet, and must return at once.
    """

    def connect(self, sink: PacketSink) -> None: ...

    def close(self) -> None: ...
