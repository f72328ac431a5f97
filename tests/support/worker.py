"""TODO docstring."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mixer_ext.connectors.base import (
    Disconnected,
    ParticipantJoined,
    Reason,
    RoomConnectError,
    RoomConnector,
    RoomEvent,
)


class ScriptedConnector(RoomConnector):
    """Each instance plays one step of the script: refuse, or join then disconnect."""

    def __init__(self, step: tuple[str, str | None, float], log: list[str]) -> None:
        super().__init__("RM", "audio-mixer-v1")
        self.kind, self.reason, self.stay = step
        self.log = log
        self._gone = asyncio.Event()

    async def connect(self) -> None:
        self.log.append(f"connect:{self.kind}")
        if self.kind == "refuse":
            raise RoomConnectError(
                "refused by script", reason=self.reason or Reason.CONNECTION_LOST
            )

    async def events(self) -> AsyncIterator[RoomEvent]:
        yield ParticipantJoined("alice")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gone.wait(), self.stay)
        yield Disconnected(self.reason or Reason.LEFT)

    async def disconnect(self) -> None:
        self.log.append("disconnect")
        self._gone.set()
