"""The twilio-video.js error codes the server sends, with the SDK's own messages.

The SDK turns ``{"type": "error", "code": N, "message": ...}`` into the
``TwilioError`` subclass it knows for ``N`` (``lib/util/twilio-video-errors.js``)
and rejects ``connect()`` with it or passes it to ``room.on('disconnected')``.
Codes are the SDK's; the messages below are copied from it so an app that
compares ``error.message`` sees the same text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TwilioVideoError:
    code: int
    message: str

    def with_detail(self, detail: str) -> TwilioVideoError:
        """The same code, the SDK's message followed by ``detail`` (for logs and the wire)."""
        return TwilioVideoError(self.code, f"{self.message}: {detail}" if detail else self.message)


ACCESS_TOKEN_INVALID = TwilioVideoError(20101, "Invalid Access Token")
ACCESS_TOKEN_HEADER_INVALID = TwilioVideoError(20102, "Invalid Access Token header")
ACCESS_TOKEN_ISSUER_INVALID = TwilioVideoError(20103, "Invalid Access Token issuer/subject")
ACCESS_TOKEN_EXPIRED = TwilioVideoError(20104, "Access Token expired or expiration date invalid")
ACCESS_TOKEN_NOT_YET_VALID = TwilioVideoError(20105, "Access Token not yet valid")
ACCESS_TOKEN_GRANTS_INVALID = TwilioVideoError(20106, "Invalid Access Token grants")
ACCESS_TOKEN_SIGNATURE_INVALID = TwilioVideoError(20107, "Invalid Access Token signature")

SIGNALING_CONNECTION_DISCONNECTED = TwilioVideoError(53001, "Signaling connection disconnected")
SIGNALING_INVALID_MESSAGE = TwilioVideoError(53004, "Client sent an invalid signaling message")
SIGNALING_SERVER_BUSY = TwilioVideoError(53006, "Video server is busy")

ROOM_NAME_INVALID = TwilioVideoError(53100, "Room name is invalid")
ROOM_NAME_TOO_LONG = TwilioVideoError(53101, "Room name is too long")
ROOM_NAME_CHARS_INVALID = TwilioVideoError(53102, "Room name contains invalid characters")
ROOM_MAX_PARTICIPANTS_EXCEEDED = TwilioVideoError(53105, "Room contains too many Participants")
ROOM_NOT_FOUND = TwilioVideoError(53106, "Room not found")
ROOM_COMPLETED = TwilioVideoError(53118, "Room completed")
TRACK_KIND_NOT_SUPPORTED = TwilioVideoError(53125, "The track kind is not supported by the Room")

PARTICIPANT_IDENTITY_INVALID = TwilioVideoError(53200, "Participant identity is invalid")
PARTICIPANT_IDENTITY_TOO_LONG = TwilioVideoError(53201, "Participant identity is too long")
PARTICIPANT_IDENTITY_CHARS_INVALID = TwilioVideoError(
    53202, "Participant identity contains invalid characters"
)
PARTICIPANT_NOT_FOUND = TwilioVideoError(53204, "Participant not found")
PARTICIPANT_DUPLICATE_IDENTITY = TwilioVideoError(
    53205, "Participant disconnected because of duplicate identity"
)
#: not in the SDK's table (it makes a plain TwilioError of it); Twilio's REST error for this
PARTICIPANT_SESSION_LENGTH_EXCEEDED = TwilioVideoError(53216, "Participant session length exceeded")

SERVER_DESCRIPTION_FAILED = TwilioVideoError(
    53401, "Server is unable to create or apply a local media description"
)
SERVER_REMOTE_DESCRIPTION_FAILED = TwilioVideoError(
    53403, "Server is unable to apply a remote media description"
)
MEDIA_CONNECTION_FAILED = TwilioVideoError(
    53405, "Media connection failed or Media activity ceased"
)
