"""The mix: every tick, one block from every input, summed and limited.

``Mixer`` is synchronous and does no I/O; ``MixerClock`` calls ``tick()``
every 20 ms.  Per tick the work is one ``decode_pending()`` per input (the
Opus payloads that arrived since the last tick, decoded in one place), one
``pull()`` per input with something to play and a handful of numpy operations
over a stacked ``(active inputs, 960, 2)`` array.  An input with nothing to play
(a DTX pause, muted, absent, drained: ``JitterBuffer.idle``) costs O(1): no
decode, no pull or concealment, no row in the mix, no metering (issue 27.2).

An app's timed metadata (``post_app_metadata``) is stamped with the stream time at
which it arrives and handed out (``take_app_payloads``) right after the mixer's own
payload of that window, so the stream's metadata timestamps only ever rise.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mixer_ext.core.frames import (
    SAMPLE_RATE,
    TICK_SAMPLES,
    TICKS_PER_PAYLOAD,
    Int16Block,
    MixedFrame,
)
from mixer_ext.core.input import Input
from mixer_ext.core.levels import LevelMeter
from mixer_ext.core.payload import MAX_LEVEL, AppPayload, MetadataPayload
from mixer_ext.settings import JitterBufferSize

Int32Block = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]

#: app payloads a mixer holds at most between two windows (500 ms)
APP_INBOX = 64


def forward_min(values: FloatArray, width: int) -> FloatArray:
    """``out[i] = values[i : i + width].min()`` for every whole window (``len - width + 1``).

    By doubling: ``log2(width)`` element-wise minimums over the array instead of ``width``
    comparisons per element (a composition limits seconds at a time); exact, since a
    minimum over overlapping spans is the minimum over their union.
    """
    out, span = values, 1
    while span * 2 <= width:
        out = np.minimum(out[:-span], out[span:])  # out[i]: the minimum of 2 * span values
        span *= 2
    rest = width - span  # 0 <= rest < span: two spans overlapping cover the window
    return np.minimum(out[:-rest], out[rest:]) if rest else out


class Limiter:
    """A look-ahead peak limiter from an int32 sum to int16, with no wrap-around.

    Below full scale it is the identity (bit-exact, delayed by
    ``lookahead`` samples, 2 ms).  Above, a stereo-linked gain is computed
    per sample: the forward minimum of the gain each sample needs over the
    look-ahead window, smoothed by a moving average over the same window (so
    the gain is at or below what every sample needs, and reaches it in 2 ms
    without a step), and released linearly (full scale back in
    ``release_seconds``) so it does not follow the waveform (no distortion
    of the hard-clip kind).
    """

    def __init__(
        self,
        *,
        tick_samples: int = TICK_SAMPLES,
        lookahead: int = 96,
        release_seconds: float = 0.25,
        ceiling: int = MAX_LEVEL,
        channels: int = 2,
    ) -> None:
        self.tick_samples = tick_samples
        self.lookahead = lookahead
        self.ceiling = ceiling
        self._rho = 1.0 / (release_seconds * SAMPLE_RATE)
        self._tail: Int32Block = np.zeros((lookahead, channels), np.int32)
        self._m_tail: FloatArray = np.ones(lookahead, np.float64)
        self._gain = 1.0
        #: lowest gain applied since the last read (1.0 = never limited)
        self.min_gain = 1.0

    def process(self, mix: Int32Block) -> Int16Block:
        """Limit one block of ``(samples, channels)`` int32; returns int16 of the same shape.

        Blocks may have any length (the live mix gives one tick, a composition seconds):
        the look-ahead carries over from one block to the next.
        """
        T, L = len(mix), self.lookahead
        xbuf = np.concatenate((self._tail, mix))
        magnitude = np.abs(xbuf)
        peak = int(magnitude.max())
        if peak <= self.ceiling and self._gain >= 1.0:
            self._tail = xbuf[T:]
            return xbuf[:T].astype(np.int16)
        a = magnitude.max(axis=1).astype(np.float64)
        need = np.minimum(1.0, self.ceiling / np.maximum(a, 1.0))
        fwd_min = forward_min(need, L + 1)[:T]
        m_ext = np.concatenate((self._m_tail, fwd_min))
        cs = np.concatenate(([0.0], np.cumsum(m_ext)))
        smooth = (cs[L + 1 :] - cs[: -L - 1]) / (L + 1)
        ramp = self._rho * np.arange(T)
        gain = np.minimum.accumulate(np.minimum(smooth - ramp, self._gain + self._rho)) + ramp
        gain = np.minimum(gain, 1.0)
        out = np.clip(np.rint(xbuf[:T] * gain[:, None]), -self.ceiling, self.ceiling)
        self._gain = float(gain[-1])
        self.min_gain = min(self.min_gain, float(gain.min()))
        self._m_tail = m_ext[-L:]
        self._tail = xbuf[T:]
        limited: Int16Block = out.astype(np.int16)
        return limited


@dataclass(eq=False)
class _Slot:
    identity: str
    track_sid: str
    input: Input
    enabled: bool = True
    gain: float = 0.0  # at the end of the last tick; fades in on the first
    leaving: bool = False


@dataclass(eq=False)
class _Participant:
    meter: LevelMeter = field(default_factory=LevelMeter)
    slots: dict[str, _Slot] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputStats:
    """A snapshot of one input's counters (see ``JitterBuffer``)."""

    identity: str
    track_sid: str
    enabled: bool
    input: Input


class Mixer:
    """The roster and the mix; ``tick()`` advances exactly one tick.

    Roster changes take effect at the next tick: a participant who joins is
    in the payload of the window being built, an input that is added, enabled
    or disabled fades in or out over that tick, and one that is removed (or
    whose participant left) plays its last tick fading out, so nothing clicks.
    A disabled input is still pulled every tick (its timeline keeps going,
    nothing piles up) but is neither mixed nor metered.

    ``exclude_identity`` (the bot) is never added and never in a payload.
    """

    def __init__(
        self,
        jitter: JitterBufferSize = JitterBufferSize.MEDIUM,
        exclude_identity: str | None = None,
        *,
        tick_samples: int = TICK_SAMPLES,
    ) -> None:
        self.jitter = jitter
        self.exclude_identity = exclude_identity
        self.tick_samples = tick_samples
        self.limiter = Limiter(tick_samples=tick_samples)
        self._participants: dict[str, _Participant] = {}
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._leaving: list[_Slot] = []
        self._stack: Int16Block = np.zeros((8, tick_samples, 2), np.int16)
        self._scratch: Int16Block = np.zeros((tick_samples, 2), np.int16)
        self._fade_in = np.linspace(0.0, 1.0, tick_samples, dtype=np.float32)[:, None]
        self._fade_out = self._fade_in[::-1].copy()
        self._tick = 0
        self._seq = 0
        #: app payloads waiting for the end of their window (at most APP_INBOX)
        self._app: deque[AppPayload] = deque()
        #: pts of the last payload handed out (mixer's or app's)
        self._last_payload_pts = -1
        #: pts of the window payload the last tick() returned, until take_app_payloads()
        self._window_end: int | None = None

    # ------------------------------------------------------------------ roster
    @property
    def tick_index(self) -> int:
        """Index of the next tick (its pts is ``tick_index * tick_samples``)."""
        return self._tick

    @property
    def participant_count(self) -> int:
        return len(self._participants)

    @property
    def participants(self) -> list[str]:
        return list(self._participants)

    @property
    def input_count(self) -> int:
        return len(self._slots)

    def add_participant(self, identity: str) -> None:
        """Add ``identity`` (idempotent; ignored for the excluded identity)."""
        if identity == self.exclude_identity:
            return
        self._participants.setdefault(identity, _Participant())

    def remove_participant(self, identity: str) -> None:
        """Remove ``identity`` and fade out its inputs (idempotent)."""
        p = self._participants.pop(identity, None)
        if p is None:
            return
        for slot in p.slots.values():
            self._drop_slot(slot)

    def add_input(self, identity: str, track_sid: str) -> Input:
        """A new input for ``identity``'s track (replacing one with the same sid).

        Adds the participant if needed.  Raises ValueError for the excluded identity.
        """
        if identity == self.exclude_identity:
            raise ValueError(f"{identity!r} is the mixer's own identity: never mixed")
        self.add_participant(identity)
        p = self._participants[identity]
        old = p.slots.get(track_sid)
        if old is not None:
            self._drop_slot(old)
        inp = Input(self.jitter, tick_samples=self.tick_samples, start_tick=self._tick)
        slot = _Slot(identity, track_sid, inp)
        p.slots[track_sid] = slot
        self._slots[(identity, track_sid)] = slot
        return inp

    def remove_input(self, identity: str, track_sid: str) -> None:
        """Fade out and forget one input (idempotent)."""
        slot = self._slots.get((identity, track_sid))
        if slot is not None:
            self._participants[identity].slots.pop(track_sid, None)
            self._drop_slot(slot)

    def set_enabled(self, identity: str, track_sid: str, enabled: bool) -> None:
        """Mute (``False``) or unmute an input from the next tick (unknown ones are ignored)."""
        slot = self._slots.get((identity, track_sid))
        if slot is not None:
            slot.enabled = enabled

    def get_input(self, identity: str, track_sid: str) -> Input | None:
        slot = self._slots.get((identity, track_sid))
        return None if slot is None else slot.input

    def input_stats(self) -> list[InputStats]:
        return [
            InputStats(s.identity, s.track_sid, s.enabled, s.input) for s in self._slots.values()
        ]

    def _drop_slot(self, slot: _Slot) -> None:
        self._slots.pop((slot.identity, slot.track_sid), None)
        slot.leaving = True
        if slot.gain > 0.0:
            self._leaving.append(slot)

    # ------------------------------------------------------------------ tick
    def tick(self) -> tuple[MixedFrame, MetadataPayload | None]:
        """Mix one tick; every 25th also returns the payload of the window it completed.

        The payload is stamped with the end of that window (the pts of the next tick):
        it is built only once the window's last sample is mixed, so stamped there it is
        never behind the audio it travels with (docs/reference/outputs.md, "Timed
        metadata", issue 26).
        """
        slots = list(self._slots.values())
        leaving, self._leaving = self._leaving, []
        need = len(slots) + len(leaving)
        if need > len(self._stack):
            self._stack = np.zeros(
                (max(need, 2 * len(self._stack)), self.tick_samples, 2), np.int16
            )
        stack = self._stack
        rows = 0
        metered: list[tuple[int, LevelMeter]] = []
        ramps: list[tuple[int, bool]] = []
        for slot in slots:
            # the one place inputs decode: what arrived since the last tick (a muted input's
            # payloads are dropped undecoded, so its silence costs next to nothing)
            inp = slot.input
            inp.decode_pending(slot.enabled or slot.gain > 0.0)
            if inp.idle:
                # nothing to play (DTX pause, muted, absent, drained: issue 27.2): no pull,
                # no row in the mix, a fade over silence is moot; its level is 0 by state
                # (-1 if muted, from the meter never being fed)
                inp.skip()
                if slot.enabled:
                    self._participants[slot.identity].meter.add_peak(0)
                slot.gain = 1.0 if slot.enabled else 0.0
                continue
            if slot.enabled:
                slot.input.pull(stack[rows])
                metered.append((rows, self._participants[slot.identity].meter))
                if slot.gain < 1.0:
                    ramps.append((rows, True))
                    slot.gain = 1.0
                rows += 1
            elif slot.gain > 0.0:
                slot.input.pull(stack[rows])
                ramps.append((rows, False))
                slot.gain = 0.0
                rows += 1
            else:  # muted: pulled all the same, so its timeline keeps going
                slot.input.pull(self._scratch)
        for slot in leaving:
            slot.input.decode_pending(True)
            slot.input.pull(stack[rows])
            ramps.append((rows, False))
            slot.gain = 0.0
            rows += 1
        if metered:
            live = stack[:rows]
            peaks = np.maximum(
                live.max(axis=(1, 2)).astype(np.int32), -live.min(axis=(1, 2)).astype(np.int32)
            )
            for row, meter in metered:
                meter.add_peak(min(int(peaks[row]), MAX_LEVEL))
        for row, fade_in in ramps:
            ramp = self._fade_in if fade_in else self._fade_out
            stack[row] = np.rint(stack[row] * ramp).astype(np.int16)
        if rows:
            mix = stack[:rows].sum(axis=0, dtype=np.int32)
        else:
            mix = np.zeros((self.tick_samples, 2), np.int32)
        frame = MixedFrame(self._tick * self.tick_samples, self.limiter.process(mix))
        self._tick += 1
        payload = None
        if self._tick % TICKS_PER_PAYLOAD == 0:
            levels = {identity: p.meter.take() for identity, p in self._participants.items()}
            payload = MetadataPayload(
                seq=self._seq, levels=levels, pts=self._tick * self.tick_samples
            )
            self._seq += 1
            # app payloads taken after this tick come out before this one (take_app_payloads)
            self._window_end = payload.pts
        return frame, payload

    # ------------------------------------------------------------------ app metadata
    def post_app_metadata(self, text: str) -> bool:
        """Stamp an app's metadata with the stream time now (the next tick's pts).

        Returns False, and keeps nothing, when ``APP_INBOX`` payloads already wait
        (the policy: refuse the newest; the API bounds what it sends far below that).
        Raises ValueError for a string over ``MAX_APP_METADATA_BYTES``.
        """
        if len(self._app) >= APP_INBOX:
            return False
        self._app.append(AppPayload(text, pts=self._tick * self.tick_samples))
        return True

    def take_app_payloads(self) -> list[AppPayload]:
        """The app payloads posted before the tick that just ran, in posting order.

        Call after every ``tick()`` and hand these out *before* the payload that tick
        returned (``MixerClock`` does): each keeps the pts it was posted at, the end of
        the audio mixed then, so like the window's own payload (stamped at its window's
        end) it is never behind the audio it travels with (issue 26), and the data
        stream's timestamps only rise (two posted in one tick: one sample apart; one
        posted at a window's end: one sample after that window's payload).
        """
        out: list[AppPayload] = []
        while self._app:
            first = self._app.popleft()
            pts = max(first.pts, self._last_payload_pts + 1)
            out.append(AppPayload(first.text, pts))
            self._last_payload_pts = pts
        if self._window_end is not None:
            self._last_payload_pts = max(self._last_payload_pts, self._window_end)
            self._window_end = None
        return out
