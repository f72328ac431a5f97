"""The embedded room server's signaling protocol: JSON text messages over one WebSocket.

Every message is an object with ``"v": PROTOCOL_VERSION`` and a ``"type"``;
both directions are pydantic models discriminated on ``type`` so a message is
either fully valid or refused as a whole (``parse_client_message`` raises
``ProtocolError`` with a short code).

Client -> server: ``join`` (first message; token, room, whether it publishes,
whether it subscribes to the others), ``answer`` (to a server offer),
``set-enabled`` (mute/unmute its track), ``leave``.

Server -> client: ``joined`` (the roster), ``participant-joined``,
``participant-left`` (with a reason), ``track-published``,
``track-unpublished``, ``track-enabled``, ``offer`` (the server always
offers: one peer connection per participant carries its published track and
all its subscriptions; ``tracks`` maps each subscribed m-line's ``mid`` to the
track it carries, ``publish_mid`` is the m-line the client sends on),
``error`` (a refused message; the connection stays up) and ``disconnected``
(the last message, with a reason; the server then closes the socket).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mixer_ext.safejson import loads_bounded

if TYPE_CHECKING:
    from mixer_ext.roomserver.rooms import Participant

PROTOCOL_VERSION = 1
#: Path of the signaling WebSocket on the room server.
SIGNAL_PATH = "/v1/signal"

Name = Annotated[str, Field(min_length=1, max_length=128)]
#: an SDP grows by ~1.7 KB per audio m-line: a mixer subscribed to 250 publishers sends
#: ~430 KB; what a connection may really send is bounded by its message size limit
Sdp = Annotated[str, Field(min_length=1, max_length=2_000_000)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = 1  # PROTOCOL_VERSION


# --- client -> server ----------------------------------------------------------------------


class Join(Message):
    type: Literal["join"] = "join"
    room: Name
    token: Annotated[str, Field(max_length=4096)] = ""
    #: the client will send one audio track (the server offers a recvonly m-line for it)
    publish: bool = False
    #: receive every other participant's audio (on by default, as in hosted rooms)
    auto_subscribe: bool = True


class Answer(Message):
    type: Literal["answer"] = "answer"
    sdp: Sdp


class SetEnabled(Message):
    type: Literal["set-enabled"] = "set-enabled"
    enabled: bool


class Leave(Message):
    type: Literal["leave"] = "leave"


ClientMessage = Annotated[Join | Answer | SetEnabled | Leave, Field(discriminator="type")]
_client_adapter: TypeAdapter[Join | Answer | SetEnabled | Leave] = TypeAdapter(ClientMessage)


# --- server -> client ----------------------------------------------------------------------


class TrackInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sid: str
    kind: Literal["audio"] = "audio"
    enabled: bool = True


class ParticipantInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    identity: str
    #: ISO 8601 UTC
    joined_at: str
    tracks: list[TrackInfo] = []


def participant_info(state: Participant) -> ParticipantInfo:
    """A participant as the protocol (``joined``) and the operator REST describe it."""
    return ParticipantInfo(
        identity=state.identity,
        joined_at=state.joined_iso(),
        tracks=[TrackInfo(sid=t.sid, enabled=t.enabled) for t in state.tracks.values()],
    )


class Joined(Message):
    type: Literal["joined"] = "joined"
    room: str
    identity: str
    #: everyone else already in the room
    participants: list[ParticipantInfo]


class ParticipantJoinedMsg(Message):
    type: Literal["participant-joined"] = "participant-joined"
    identity: str


class ParticipantLeftMsg(Message):
    type: Literal["participant-left"] = "participant-left"
    identity: str
    reason: str


class TrackPublishedMsg(Message):
    type: Literal["track-published"] = "track-published"
    identity: str
    track: TrackInfo


class TrackUnpublishedMsg(Message):
    type: Literal["track-unpublished"] = "track-unpublished"
    identity: str
    track_sid: str


class TrackEnabledMsg(Message):
    type: Literal["track-enabled"] = "track-enabled"
    identity: str
    track_sid: str
    enabled: bool


class SubscribedTrack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    identity: str
    track_sid: str
    enabled: bool = True


class Offer(Message):
    type: Literal["offer"] = "offer"
    sdp: Sdp
    #: mid -> the track that m-line carries (only subscriptions still active)
    tracks: dict[str, SubscribedTrack] = {}
    #: the m-line the client publishes on, when it asked to publish
    publish_mid: str | None = None


class ErrorMsg(Message):
    type: Literal["error"] = "error"
    #: short machine code: malformed, oversized, unexpected, ...
    code: str
    message: str


class DisconnectedMsg(Message):
    type: Literal["disconnected"] = "disconnected"
    reason: str
    message: str = ""


ServerMessage = Annotated[
    Joined
    | ParticipantJoinedMsg
    | ParticipantLeftMsg
    | TrackPublishedMsg
    | TrackUnpublishedMsg
    | TrackEnabledMsg
    | Offer
    | ErrorMsg
    | DisconnectedMsg,
    Field(discriminator="type"),
]
_server_adapter: TypeAdapter[
    Joined
    | ParticipantJoinedMsg
    | ParticipantLeftMsg
    | TrackPublishedMsg
    | TrackUnpublishedMsg
    | TrackEnabledMsg
    | Offer
    | ErrorMsg
    | DisconnectedMsg
] = TypeAdapter(ServerMessage)


class ProtocolError(ValueError):
    """A message was refused.  ``code`` is a metric label, ``str()`` one line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


#: a refusal quotes at most this much of what it refuses (it goes back to the sender and to the log)
MAX_DETAIL = 160


def _bounded(text: str) -> str:
    """One line, printable, at most ``MAX_DETAIL`` characters: safe to log and to send back."""
    flat = "".join(ch if ch.isprintable() else "?" for ch in text)
    return flat if len(flat) <= MAX_DETAIL else flat[: MAX_DETAIL - 3] + "..."


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = _bounded(".".join(str(p) for p in err.get("loc", ())))
    msg = _bounded(str(err.get("msg", "invalid")))
    return f"{loc}: {msg}" if loc else msg


def _load(text: str | bytes, max_bytes: int) -> object:
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise ProtocolError("oversized", f"message of {size} bytes exceeds {max_bytes}")
    try:
        return loads_bounded(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("malformed", "message is not valid JSON") from None


def parse_client_message(text: str | bytes, max_bytes: int) -> Join | Answer | SetEnabled | Leave:
    """Validate one client message or raise ``ProtocolError``."""
    data = _load(text, max_bytes)
    if isinstance(data, dict) and data.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise ProtocolError(
            "version", f"protocol version {_bounded(repr(data.get('v')))} is not supported"
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError("malformed", _describe(exc)) from None


def parse_server_message(
    text: str | bytes, max_bytes: int = 16 * 1024 * 1024
) -> (
    Joined
    | ParticipantJoinedMsg
    | ParticipantLeftMsg
    | TrackPublishedMsg
    | TrackUnpublishedMsg
    | TrackEnabledMsg
    | Offer
    | ErrorMsg
    | DisconnectedMsg
):
    """Validate one server message (client side) or raise ``ProtocolError``."""
    data = _load(text, max_bytes)
    try:
        return _server_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError("malformed", _describe(exc)) from None


def encode(message: Message) -> str:
    """Compact JSON for the wire."""
    return message.model_dump_json()
