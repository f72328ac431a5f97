"""Consecutive Opus payloads joined into one Opus packet, so a decoder call decodes up to 120 ms.

Offline, a composition decodes every payload that carries sound.  Fed one 20 ms payload
per call, FFmpeg's Opus decoder (through PyAV) spends about a third of its time per call
(the packet, the frame it hands back, the Python around them), not decoding.  RFC 6716
3.2.5 lets one Opus packet carry up to 48 frames of one configuration (mode, bandwidth,
frame size, channels: the TOC byte's upper six bits) and up to 120 ms: a "code 3" packet
with the frames' sizes up front.  A run of payloads that follow one another without a gap,
each a single frame ("code 0") of the same configuration, is exactly such a sequence of
frames; joined, the decoder goes through the same frames in the same order with the same
state, and its output is the same samples (checked bit for bit in ``tests/test_compose.py``
with real libopus payloads and FFmpeg's decoder).

Sans-I/O: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Sequence

#: the longest Opus packet (RFC 6716 3.2.5): 120 ms at 48 kHz
MAX_PACKET_SAMPLES = 5760
#: the most frames one packet may carry (the frame count is 6 bits, at most 48)
MAX_FRAMES = 48
#: the largest frame (RFC 6716 3.4, R2): a larger code 0 payload is malformed, never joined
MAX_FRAME_BYTES = 1275
#: the TOC bits that must agree for frames to share a packet (config and stereo flag)
CONFIG_MASK = 0xFC


def frame_samples(toc: int) -> int:
    """Samples (48 kHz) in one frame of a packet whose TOC byte is ``toc`` (RFC 6716 3.1)."""
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        return (480, 960, 1920, 2880)[config & 3]
    if config < 16:  # hybrid: 10, 20 ms
        return (480, 960)[config & 1]
    return (120, 240, 480, 960)[config & 3]  # CELT: 2.5, 5, 10, 20 ms


def joinable(payload: bytes) -> bool:
    """True for a well-formed single-frame ("code 0") payload: one that may join a run."""
    return len(payload) >= 2 and payload[0] & 3 == 0 and len(payload) - 1 <= MAX_FRAME_BYTES


def max_run(toc: int) -> int:
    """How many frames of ``toc``'s configuration fit in one packet."""
    return min(MAX_FRAMES, MAX_PACKET_SAMPLES // frame_samples(toc))


def join(payloads: Sequence[bytes]) -> bytes:
    """One Opus packet carrying the frames of ``payloads``, in order.

    The caller (a composition's reader, per payload) sees to it that every payload is
    ``joinable`` and shares the first one's TOC configuration (``CONFIG_MASK``), and that
    there are at most ``max_run`` of them: not checked again here.  One payload is
    returned as it is.  The packet is code 3, VBR, no padding (RFC 6716 3.2.5): TOC,
    the frame count, then every frame's size but the last's (one byte below 252, else
    two), then the frames.
    """
    if len(payloads) == 1:
        return payloads[0]
    first = payloads[0][0]
    if len(payloads) > max_run(first):
        raise ValueError(f"{len(payloads)} frames exceed one Opus packet")
    head = bytearray((first | 3, 0x80 | len(payloads)))
    for payload in payloads[:-1]:
        size = len(payload) - 1
        if size < 252:
            head.append(size)
        else:
            low = 252 + (size & 3)
            head += bytes((low, (size - low) >> 2))
    return bytes(head) + b"".join([memoryview(p)[1:] for p in payloads])


__all__ = ["MAX_PACKET_SAMPLES", "frame_samples", "join", "joinable", "max_run"]
