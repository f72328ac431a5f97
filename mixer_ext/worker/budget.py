"""The shutdown budget: one setting, each stage's share of it (issue 16.11).

``MIXER_SHUTDOWN_BUDGET`` (seconds, default 20) is the most a stopping worker may
take from SIGTERM to exit; Kubernetes' ``terminationGracePeriodSeconds`` must
leave a few seconds more (the chart's 30 s does).  The stages run one after the
other and each gets a fixed share, so their sum is the budget:

=================  =====  ======================================================
stage              share  what is waited for
=================  =====  ======================================================
``cancel``          5 %   the room join/pump the signal interrupted
``clock``          10 %   the mixer clock and its input readers
``outputs``        45 %   encoder flush, ENDLIST, recordings finalized, RTMP closed
``room``           15 %   leaving the room
``status``         15 %   delivering the last status callbacks
``http``           10 %   stopping the HTTP endpoint
=================  =====  ======================================================

The HTTP linger (``MIXER_HTTP_LINGER``: serving the finished playlist a while so
players see ``#EXT-X-ENDLIST``) comes on top only at a natural end (maximum
duration, room ended); after a signal it is skipped, since the pod is going away.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARES = {
    "cancel": 0.05,
    "clock": 0.10,
    "outputs": 0.45,
    "room": 0.15,
    "status": 0.15,
    "http": 0.10,
}


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """Seconds for each shutdown stage, derived from ``total``."""

    total: float

    def share(self, stage: str) -> float:
        return self.total * SHARES[stage]

    @property
    def cancel(self) -> float:
        return self.share("cancel")

    @property
    def clock(self) -> float:
        return self.share("clock")

    @property
    def outputs(self) -> float:
        return self.share("outputs")

    @property
    def room(self) -> float:
        return self.share("room")

    @property
    def status(self) -> float:
        return self.share("status")

    @property
    def http(self) -> float:
        return self.share("http")
