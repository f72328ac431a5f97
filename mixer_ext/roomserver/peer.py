"""What the room server and its front-ends know of each other: two small protocols.

``Peer`` is one participant's connection, whatever protocol it speaks (the project's
``session.Session``, the twilio-video.js ``TwilioSession``); ``PeerHost`` is what a
front-end needs from the server that runs it.  Both sides import only this module (and
``rooms``), never each other: that is what keeps ``roomserver/`` free of import circles.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from mixer_ext.roomserver.datatracks import DataFanout
from mixer_ext.roomserver.forward import PacketFanout
from mixer_ext.roomserver.limits import ConnectionLimits, TokenBucket
from mixer_ext.roomserver.rooms import Participant, Room, Rooms, RosterEvent
from mixer_ext.roomserver.subscribe_rules import SubscribeRule


class Peer(Protocol):
    """One participant's connection (owned by the front-end that admitted it)."""

    label: str
    room: Room
    participant: Participant

    @property
    def closed(self) -> bool: ...

    def on_roster(self, event: RosterEvent) -> None:
        """Tell the client what changed in its room (never awaits)."""

    def fanout_for(self, track_sid: str) -> PacketFanout | None:
        """The packets of this peer's published track ``track_sid`` (None: no media yet)."""

    def data_fanout_for(self, track_sid: str) -> DataFanout | None:
        """The messages of this peer's published data track ``track_sid`` (None: none)."""

    def subscribe(self, publisher: Peer, track_sid: str) -> bool:
        """Receive ``publisher``'s track ``track_sid``; False when it could not (yet)."""

    def unsubscribe(self, track_sid: str) -> None: ...

    async def close(self, reason: str | None, message: str = "") -> None:
        """Stop everything it owns; tell the client why when ``reason`` is given."""


class PeerHost(Protocol):
    """What a front-end needs from the room server."""

    rooms: Rooms
    connections: ConnectionLimits
    max_errors_before_join: int
    message_rate: float
    message_burst: int

    def warn(self, kind: str, fmt: str, *args: object) -> None: ...

    def new_bucket(self) -> TokenBucket: ...

    def admit_connection(self, peer: str) -> web.Response | None: ...

    def admitted(self, peer: Peer, replaced: Participant | None) -> None:
        """A front-end admitted ``peer`` (``replaced``: the participant it displaced)."""

    def subscribe_to_room(self, peer: Peer) -> None:
        """``peer`` receives every track published in its room so far."""

    def set_subscribe_rules(
        self, room: Room, participant: Participant, rules: tuple[SubscribeRule, ...]
    ) -> bool:
        """Twilio's Subscribe Rules for ``participant``, applied at once (False: gone)."""

    async def remove(self, peer: Peer, reason: str, message: str = "") -> None:
        """``peer`` leaves its room with ``reason`` (if it still holds its seat), then closes."""

    def schedule_removal(self, peer: Peer, reason: str) -> None:
        """``remove`` from a context that must not await (callbacks, loops)."""

    async def end_room(self, room: Room, reason: str) -> int:
        """Everyone in ``room`` leaves with ``reason``; the room ends.  How many left."""
