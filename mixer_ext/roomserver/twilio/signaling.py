"""The twilio-video.js v2 room signaling messages ("RSP v2"), parsed and built with no I/O.

These are the bodies of TCMP ``msg`` messages (``connection``).  From the SDK
(``lib/signaling/v2/twilioconnectiontransport.js``, ``room.js``, ``peerconnection.js``):

client -> server
  ``ice``         ``{version: 1, token, edge}``: asks for ICE servers (answered by ``iced``);
  ``connect``     ``{version: 2, name, token, participant: {revision, tracks}, peer_connections,
                  subscribe: {rules: [{type: include|exclude, all: true}]}, format, media_signaling,
                  bandwidth_profile?, ice_servers: acquire|overrode, publisher}``;
  ``update``      ``{session, participant?, peer_connections?, ...}``: new local state (tracks
                  added, removed, enabled/disabled: always the whole list with a higher revision),
                  and peer connection descriptions (offers/answers) and trickled ICE candidates;
  ``sync``        after a reconnect: like connect with ``session``;
  ``disconnect``  ``{session}``: the app called ``room.disconnect()``.

server -> client
  ``iced``        ``{ice_servers: [...]}``;
  ``connected``   ``{session, sid, name, participant: {sid, identity}, participants,
                  peer_connections, published, subscribed, options: {session_timeout}}``;
  ``update``      any of ``participants`` (each ``{sid, identity, revision, state, tracks}``),
                  ``peer_connections`` (``{id, description: {type: offer|answer|create-offer|close,
                  sdp, revision}}``), ``published`` (``{revision, tracks: [{id, sid, state}]}``) and
                  ``subscribed`` (``{revision, tracks: [{sid, id}]}``, ``id`` being the msid track
                  id of the media the server sends);
  ``synced``      like update, answering ``sync``;
  ``disconnected`` ``{status: "completed"}`` ends the room for the client (53118);
  ``error``       ``{code, message}`` ends the connection with that TwilioError code.

Revisions only grow; the SDK ignores a state whose revision is not above the last it applied.

Why one module: it is the whole v2 room-signaling vocabulary (parsers and
builders of each message), kept together so the wire format can be read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mixer_ext.roomserver.twilio import errors as e

ICE_VERSION = 1
RSP_VERSION = 2
#: seconds a disconnected client may take to reconnect with ``sync`` (the SDK's default)
SESSION_TIMEOUT = 30
MAX_TRACKS = 16
MAX_SDP_BYTES = 64 * 1024
MAX_CANDIDATES = 64
#: the media signaling channels served (over a data channel each, named as the channel)
MEDIA_SIGNALING = ("active_speaker", "network_quality")


class SignalingError(ValueError):
    """A client message was refused; ``error`` is the code to send back."""

    def __init__(self, detail: str, error: e.TwilioVideoError = e.SIGNALING_INVALID_MESSAGE):
        super().__init__(detail)
        self.error = error.with_detail(detail)


# --- client -> server ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalTrack:
    """A track the client publishes: ``id`` is its MediaStreamTrack id, ``kind`` audio/video."""

    id: str
    kind: str
    name: str
    enabled: bool
    priority: str = "standard"


@dataclass(frozen=True, slots=True)
class LocalParticipant:
    revision: int
    tracks: tuple[LocalTrack, ...]


@dataclass(frozen=True, slots=True)
class Description:
    type: str  # offer | answer | create-offer | close | rollback
    revision: int
    sdp: str | None = None


@dataclass(frozen=True, slots=True)
class IceCandidates:
    revision: int
    ufrag: str | None
    candidates: tuple[dict[str, Any], ...]
    complete: bool


@dataclass(frozen=True, slots=True)
class PeerConnectionState:
    id: str
    description: Description | None = None
    ice: IceCandidates | None = None


@dataclass(frozen=True, slots=True)
class IceRequest:
    token: str


@dataclass(frozen=True, slots=True)
class Connect:
    name: str | None
    token: str
    participant: LocalParticipant
    peer_connections: tuple[PeerConnectionState, ...]
    automatic_subscription: bool = True
    #: media signaling the SDK asked for and this server offers (``MEDIA_SIGNALING``)
    media_signaling: tuple[str, ...] = ()
    #: options the SDK asked for that this server does not offer (for the log)
    declined: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    participant: LocalParticipant | None
    peer_connections: tuple[PeerConnectionState, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    token: str
    participant: LocalParticipant | None
    peer_connections: tuple[PeerConnectionState, ...]
    #: the ``session`` of the ``connected`` it resumes ("" on the connection it came on)
    session: str = ""


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


ClientMessage = IceRequest | Connect | Update | Sync | Disconnect


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SignalingError(f"{what} must be a non-negative integer")
    return value


def _str(value: Any, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise SignalingError(f"{what} must be a string of at most {limit} characters")
    return value


def _participant(value: Any) -> LocalParticipant:
    if not isinstance(value, dict):
        raise SignalingError("participant must be an object")
    tracks = value.get("tracks", [])
    if not isinstance(tracks, list) or len(tracks) > MAX_TRACKS:
        raise SignalingError(f"participant.tracks must be a list of at most {MAX_TRACKS}")
    parsed = []
    for n, t in enumerate(tracks):
        if not isinstance(t, dict):
            raise SignalingError(f"participant.tracks[{n}] must be an object")
        track_id = _str(t.get("id"), f"participant.tracks[{n}].id")
        parsed.append(
            LocalTrack(
                id=track_id,
                kind=_str(t.get("kind"), f"participant.tracks[{n}].kind", 16),
                name=_str(t.get("name", track_id), f"participant.tracks[{n}].name"),
                enabled=bool(t.get("enabled", True)),
                priority=str(t.get("priority") or "standard")[:16],
            )
        )
    return LocalParticipant(_int(value.get("revision", 0), "participant.revision"), tuple(parsed))


def _description(value: Any, n: int) -> Description:
    if not isinstance(value, dict):
        raise SignalingError(f"peer_connections[{n}].description must be an object")
    kind = _str(value.get("type"), f"peer_connections[{n}].description.type", 16)
    sdp = value.get("sdp")
    if sdp is not None:
        sdp = _str(sdp, f"peer_connections[{n}].description.sdp", MAX_SDP_BYTES)
    return Description(kind, _int(value.get("revision", 0), "description.revision"), sdp)


def _ice(value: Any, n: int) -> IceCandidates:
    if not isinstance(value, dict):
        raise SignalingError(f"peer_connections[{n}].ice must be an object")
    candidates = value.get("candidates", [])
    if not isinstance(candidates, list) or len(candidates) > MAX_CANDIDATES:
        raise SignalingError(f"peer_connections[{n}].ice.candidates: at most {MAX_CANDIDATES}")
    good = tuple(
        c for c in candidates if isinstance(c, dict) and isinstance(c.get("candidate"), str)
    )
    ufrag = value.get("ufrag")
    return IceCandidates(
        revision=_int(value.get("revision", 0), "ice.revision"),
        ufrag=ufrag if isinstance(ufrag, str) else None,
        candidates=good,
        complete=bool(value.get("complete", False)),
    )


def _peer_connections(value: Any) -> tuple[PeerConnectionState, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 8:
        raise SignalingError("peer_connections must be a list of at most 8")
    out = []
    for n, pc in enumerate(value):
        if not isinstance(pc, dict):
            raise SignalingError(f"peer_connections[{n}] must be an object")
        desc = pc.get("description")
        ice = pc.get("ice")
        out.append(
            PeerConnectionState(
                id=_str(pc.get("id"), f"peer_connections[{n}].id", 128),
                description=None if desc is None else _description(desc, n),
                ice=None if ice is None else _ice(ice, n),
            )
        )
    return tuple(out)


def _automatic_subscription(subscribe: Any) -> bool:
    if not isinstance(subscribe, dict):
        return True
    rules = subscribe.get("rules")
    if not isinstance(rules, list):
        return True
    for rule in rules:
        if isinstance(rule, dict) and rule.get("all") is True and rule.get("type") == "exclude":
            return False
    return True


def parse_client_body(body: dict[str, Any]) -> ClientMessage:
    """One client message body, checked; ``SignalingError`` (code 53004) when malformed."""
    kind = body.get("type")
    if kind == "ice":
        return IceRequest(token=_str(body.get("token", ""), "token", 8192))
    if kind == "connect":
        if body.get("version") != RSP_VERSION:
            raise SignalingError(f"connect version {body.get('version')!r} is not {RSP_VERSION}")
        if body.get("format", "unified") != "unified":
            raise SignalingError("only unified-plan SDP is supported")
        name = body.get("name")
        asked = body.get("media_signaling")
        asked = sorted(k for k in asked if isinstance(k, str)) if isinstance(asked, dict) else []
        declined = tuple(k for k in asked if k not in MEDIA_SIGNALING) + (
            ("bandwidth_profile",) if body.get("bandwidth_profile") else ()
        )
        return Connect(
            name=None if name is None else _str(name, "name", 1024),
            token=_str(body.get("token", ""), "token", 8192),
            participant=_participant(body.get("participant", {})),
            peer_connections=_peer_connections(body.get("peer_connections")),
            automatic_subscription=_automatic_subscription(body.get("subscribe")),
            media_signaling=tuple(k for k in asked if k in MEDIA_SIGNALING),
            declined=declined,
        )
    if kind == "update":
        participant = body.get("participant")
        return Update(
            participant=None if participant is None else _participant(participant),
            peer_connections=_peer_connections(body.get("peer_connections")),
        )
    if kind == "sync":
        participant = body.get("participant")
        return Sync(
            token=_str(body.get("token", ""), "token", 8192),
            participant=None if participant is None else _participant(participant),
            peer_connections=_peer_connections(body.get("peer_connections")),
            session=_str(body.get("session", ""), "session", 64),
        )
    if kind == "disconnect":
        return Disconnect()
    raise SignalingError(f"unknown message type {str(kind)[:20]!r}")


# --- server -> client ------------------------------------------------------------------------


@dataclass(slots=True)
class RemoteTrack:
    sid: str
    name: str
    kind: str = "audio"
    enabled: bool = True
    priority: str = "standard"

    def render(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            "priority": self.priority,
        }


@dataclass(slots=True)
class RemoteParticipant:
    """Another participant as the SDK sees it; ``revision`` rises with every change."""

    sid: str
    identity: str
    revision: int = 1
    state: str = "connected"
    tracks: list[RemoteTrack] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "identity": self.identity,
            "revision": self.revision,
            "state": self.state,
            "tracks": [t.render() for t in self.tracks],
        }


@dataclass(frozen=True, slots=True)
class PublishedTrack:
    """The server's verdict on one of the client's tracks: ``ready`` with a SID, or ``failed``."""

    id: str
    sid: str | None
    error: e.TwilioVideoError | None = None

    def render(self) -> dict[str, Any]:
        if self.error is not None:
            return {
                "id": self.id,
                "state": "failed",
                "error": {"code": self.error.code, "message": self.error.message},
            }
        return {"id": self.id, "sid": self.sid, "state": "ready"}


def iced(ice_servers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "iced", "version": ICE_VERSION, "ice_servers": ice_servers}


def description(pc_id: str, kind: str, revision: int, sdp: str | None = None) -> dict[str, Any]:
    """One ``peer_connections`` entry carrying a description (offer, answer, close...)."""
    desc: dict[str, Any] = {"type": kind, "revision": revision}
    if sdp is not None:
        desc["sdp"] = sdp
    return {"id": pc_id, "description": desc}


def room_state(
    kind: str,
    *,
    participants: list[RemoteParticipant] | None = None,
    peer_connections: list[dict[str, Any]] | None = None,
    published: tuple[int, list[PublishedTrack]] | None = None,
    subscribed: tuple[int, list[tuple[str, str]]] | None = None,
    recording: tuple[bool, int] | None = None,
    media_signaling: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An ``update`` or ``synced`` message; ``subscribed`` is (revision, [(track sid, id)]),
    ``recording`` (is recording, revision): the SDK's ``room.isRecording`` and its
    ``recordingStarted``/``recordingStopped`` events (``signaling/v2/recording.js``)."""
    msg: dict[str, Any] = {"type": kind, "version": RSP_VERSION}
    if media_signaling:
        # the SDK then waits for a data channel so labelled (signaling/v2/mediasignaling.js)
        msg["media_signaling"] = {
            name: {"transport": {"type": "data-channel", "label": name}} for name in media_signaling
        }
    if recording is not None:
        msg["recording"] = {"is_recording": recording[0], "revision": recording[1]}
    if participants is not None:
        msg["participants"] = [p.render() for p in participants]
    if peer_connections:
        msg["peer_connections"] = peer_connections
    if published is not None:
        msg["published"] = {"revision": published[0], "tracks": [t.render() for t in published[1]]}
    if subscribed is not None:
        msg["subscribed"] = {
            "revision": subscribed[0],
            "tracks": [{"sid": sid, "id": track_id} for sid, track_id in subscribed[1]],
        }
    return msg


def connected(
    *,
    session: str,
    room_sid: str,
    room_name: str,
    participant_sid: str,
    identity: str,
    participants: list[RemoteParticipant],
    peer_connections: list[dict[str, Any]],
    published: tuple[int, list[PublishedTrack]],
    subscribed: tuple[int, list[tuple[str, str]]],
    recording: tuple[bool, int] = (False, 1),
    media_signaling: tuple[str, ...] = (),
) -> dict[str, Any]:
    msg = room_state(
        "connected",
        media_signaling=media_signaling,
        participants=participants,
        peer_connections=peer_connections,
        published=published,
        subscribed=subscribed,
        recording=recording,
    )
    msg.update(
        {
            "session": session,
            "sid": room_sid,
            "name": room_name,
            "participant": {"sid": participant_sid, "identity": identity},
            "options": {"session_timeout": SESSION_TIMEOUT},
        }
    )
    return msg


def active_speaker(participant_sid: str | None) -> dict[str, Any]:
    """Over the ``active_speaker`` channel: the SDK's ``dominantSpeakerChanged``."""
    return {"type": "active_speaker", "participant": participant_sid}


def disconnected_completed() -> dict[str, Any]:
    """The room ended (REST ``Status=completed``): the SDK reports 53118."""
    return {"type": "disconnected", "version": RSP_VERSION, "status": "completed"}


def disconnected_removed() -> dict[str, Any]:
    """The participant was removed (REST ``Status=disconnected``): the SDK disconnects, no error."""
    return {"type": "disconnected", "version": RSP_VERSION}


def error(err: e.TwilioVideoError) -> dict[str, Any]:
    """Ends the client's connection with ``err`` (its ``room.on('disconnected')`` error)."""
    return {"type": "error", "version": RSP_VERSION, "code": err.code, "message": err.message}
