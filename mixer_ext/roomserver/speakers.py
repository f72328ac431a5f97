"""Who is the dominant speaker of a room, from the audio levels senders put in their RTP
headers (RFC 6464 ``urn:ietf:params:rtp-hdrext:ssrc-audio-level``): nothing is decoded.

Sans-I/O, with the time passed in.  ``level`` is called per packet and only adds to two
numbers of that participant; ``tick`` (every ``TICK`` seconds, by the gateway) turns each
participant's mean level over the last tick into a loudness (dB above silence: 127 minus
the RFC 6464 level, which is -dBov), smooths it, and decides:

* a participant is *speaking* when its smoothed loudness is over ``SPEECH_DB``
  (packets that stopped count as silence);
* the dominant speaker changes only to a speaker that has been the loudest for
  ``HOLD`` seconds in a row and is ``MARGIN_DB`` louder than the current one (or the
  current one went quiet): two people taking turns produce one change per turn, and a
  cough or a one-word interjection none;
* nobody speaking keeps the last dominant speaker (as Twilio did); one that leaves
  (``forget``) is no longer dominant: the change is to None.
"""

from __future__ import annotations

from dataclasses import dataclass

#: seconds between decisions
TICK = 0.2
#: smoothed loudness (dB above digital silence) from which a participant counts as speaking
SPEECH_DB = 40.0
#: how much louder a challenger must be than a speaking dominant speaker
MARGIN_DB = 6.0
#: seconds a challenger must stay the loudest speaker before it takes over
HOLD = 1.0
#: weight of the newest tick in the smoothed loudness (about 0.6 s of memory at 0.2 s ticks)
SMOOTHING = 0.35
SILENCE = 127


@dataclass(slots=True)
class _Talker:
    total: int = 0
    packets: int = 0
    loudness: float = 0.0


class DominantSpeaker:
    """One room's dominant speaker (participant SIDs)."""

    def __init__(self) -> None:
        self._talkers: dict[str, _Talker] = {}
        self.dominant: str | None = None
        self._challenger: str | None = None
        self._since = 0.0

    def level(self, who: str, level: int) -> None:
        """One packet's RFC 6464 level (0 loudest .. 127 silence) from ``who``."""
        talker = self._talkers.get(who)
        if talker is None:
            talker = self._talkers[who] = _Talker()
        talker.total += SILENCE - min(SILENCE, max(0, level))
        talker.packets += 1

    def keep(self, present: set[str]) -> None:
        """Forget everyone not in ``present`` (they left the room)."""
        for who in [w for w in self._talkers if w not in present]:
            self.forget(who)

    def forget(self, who: str) -> None:
        self._talkers.pop(who, None)
        if self._challenger == who:
            self._challenger = None

    def tick(self, now: float) -> tuple[bool, str | None]:
        """(whether the dominant speaker changed, who it is now)."""
        for talker in self._talkers.values():
            mean = talker.total / talker.packets if talker.packets else 0.0
            talker.loudness += SMOOTHING * (mean - talker.loudness)
            talker.total = talker.packets = 0
        if self.dominant is not None and self.dominant not in self._talkers:
            self.dominant, self._challenger = None, None
            return True, None
        speaking = {w: t.loudness for w, t in self._talkers.items() if t.loudness >= SPEECH_DB}
        if not speaking:
            self._challenger = None
            return False, self.dominant
        loudest = max(speaking, key=lambda w: speaking[w])
        if loudest == self.dominant:
            self._challenger = None
            return False, self.dominant
        current = speaking.get(self.dominant or "")
        if current is not None and speaking[loudest] < current + MARGIN_DB:
            self._challenger = None
            return False, self.dominant
        if loudest != self._challenger:
            self._challenger, self._since = loudest, now
        if now - self._since < HOLD and self.dominant is not None:
            return False, self.dominant
        self.dominant, self._challenger = loudest, None
        return True, loudest
