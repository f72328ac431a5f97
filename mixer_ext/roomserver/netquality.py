"""Network quality levels (0 broken .. 5 excellent) from what the server sees of a
participant's media, as twilio-video.js shows them (``networkQualityLevel``/``Stats``).

Sans-I/O.  Each participant has two ``Meter``s, fed about once a second with cumulative
RTP counters the gateway reads from aiortc's stats:

* ``send`` (the participant's upload): the server's receivers of its published audio,
  ``inbound-rtp`` packets received and lost (sequence gaps), interarrival jitter;
* ``recv`` (its download): the server's senders of its subscriptions, ``remote-inbound-rtp``
  from the participant's own RTCP receiver reports: packets lost, jitter, round-trip time.

A meter's loss is the fraction lost since the previous sample, smoothed (half the weight
to the newest second); its level is the lower of a loss level and a latency level
(``LOSS_LEVELS``, ``LATENCY_LEVELS``).  The participant's level is the lower of its two
meters' (None until one has data).  Bandwidth is not measured (its stats stay null).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: (fraction lost under which, level); at or over the last: 0
LOSS_LEVELS = ((0.01, 5), (0.03, 4), (0.07, 3), (0.15, 2), (0.5, 1))
#: (jitter under, round-trip time under (seconds), level); otherwise 1
LATENCY_LEVELS = ((0.03, 0.2, 5), (0.05, 0.3, 4), (0.1, 0.5, 3), (0.2, 1.0, 2))
SMOOTHING = 0.5


def loss_level(fraction_lost: float) -> int:
    for under, level in LOSS_LEVELS:
        if fraction_lost < under:
            return level
    return 0


def latency_level(jitter: float | None, rtt: float | None) -> int:
    for max_jitter, max_rtt, level in LATENCY_LEVELS:
        if (jitter or 0.0) < max_jitter and (rtt or 0.0) < max_rtt:
            return level
    return 1


@dataclass(slots=True)
class Meter:
    """One direction of one participant's media."""

    fraction_lost: float | None = None
    jitter: float | None = None
    rtt: float | None = None
    _received: int | None = None
    _lost: int | None = None

    def sample(
        self, received: int, lost: int, jitter: float | None = None, rtt: float | None = None
    ) -> None:
        """Cumulative ``received``/``lost`` packets (all the direction's streams together),
        jitter and round-trip time in seconds (None: unknown)."""
        if self._received is not None and self._lost is not None:
            got, missed = received - self._received, max(0, lost - self._lost)
            if got >= 0 and got + missed > 0:  # (a stream ended: counters restart, skip)
                now = missed / (got + missed)
                old = self.fraction_lost
                self.fraction_lost = now if old is None else old + SMOOTHING * (now - old)
        self._received, self._lost = received, lost
        self.jitter, self.rtt = jitter, rtt

    @property
    def level(self) -> int | None:
        if self.fraction_lost is None:
            return None
        return min(loss_level(self.fraction_lost), latency_level(self.jitter, self.rtt))

    def stats(self) -> dict[str, Any]:
        """The SDK's ``NetworkQualitySendOrRecvStats``."""
        out: dict[str, Any] = {}
        if self.fraction_lost is not None:
            out["fractionLost"] = {
                "fractionLost": round(self.fraction_lost, 4),
                "level": loss_level(self.fraction_lost),
            }
        out["latency"] = {
            "jitter": None if self.jitter is None else round(self.jitter, 4),
            "rtt": None if self.rtt is None else round(self.rtt, 4),
            "level": latency_level(self.jitter, self.rtt),
        }
        return out


@dataclass(slots=True)
class NetworkQuality:
    """One participant's levels; ``report`` renders them at a verbosity (the SDK's
    ``networkQuality: {local, remote}``: 1 the level alone, 2 and 3 with the stats)."""

    send: Meter
    recv: Meter

    @classmethod
    def new(cls) -> NetworkQuality:
        return cls(Meter(), Meter())

    @property
    def level(self) -> int | None:
        levels = [lv for lv in (self.send.level, self.recv.level) if lv is not None]
        return min(levels) if levels else None

    def report(self, verbosity: int) -> int | dict[str, Any] | None:
        level = self.level
        if level is None or verbosity < 1:
            return None
        if verbosity == 1:
            return level
        send, recv = self.send.level, self.recv.level
        return {
            "level": level,
            "audio": {
                "send": level if send is None else send,
                "recv": level if recv is None else recv,
                "sendStats": self.send.stats(),
                "recvStats": self.recv.stats(),
            },
            "video": None,
        }


def message(
    local: int | dict[str, Any] | None, remotes: list[tuple[str, int | dict[str, Any]]]
) -> dict[str, Any]:
    """What the SDK's ``NetworkQualitySignaling`` reads (``local``, ``remotes``)."""
    out: dict[str, Any] = {"type": "network_quality"}
    if local is not None:
        out["local"] = local
    rendered = []
    for sid, report in remotes:
        if isinstance(report, dict):
            rendered.append({"sid": sid, **report})
        else:
            rendered.append({"sid": sid, "level": report})
    out["remotes"] = rendered
    return out
