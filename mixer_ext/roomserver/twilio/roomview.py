"""The room as one twilio-video.js client sees it, and its own tracks as the server takes them.

Sans-I/O: plain state and the decisions; ``session.TwilioSession`` sends what they return.

* ``RemoteView``: the other participants as the SDK's ``room.participants`` has them (by
  identity), kept from the rooms owner's roster events.  Each change is a whole
  participant state with a higher ``revision``, as v2 room signaling carries it.
* ``LocalTracks``: the reconciliation of the client's ``participant`` state (its tracks,
  with a revision) with what the server published for it: an ``MT`` SID for every audio
  and data track at once (the SDK's ``publishTrack`` settles on it), a 53125 for any other
  kind (audio rooms), and the SIDs of the tracks it stopped publishing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mixer_ext.roomserver.rooms import (
    Participant,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantReconnected,
    ParticipantReconnecting,
    Room,
    RosterEvent,
    TrackDisabled,
    TrackEnabled,
    TrackPublished,
    TrackUnpublished,
)
from mixer_ext.roomserver.twilio import errors as e
from mixer_ext.roomserver.twilio import signaling as s
from mixer_ext.roomserver.twilio.sids import TRACK, new_sid


class RemoteView:
    """The others in the room as the SDK sees them, by identity."""

    def __init__(self) -> None:
        self.remotes: dict[str, s.RemoteParticipant] = {}

    @staticmethod
    def remote_for(other: Participant) -> s.RemoteParticipant:
        remote = s.RemoteParticipant(sid=other.sid, identity=other.identity, revision=1)
        for track in other.tracks.values():
            remote.tracks.append(
                s.RemoteTrack(
                    sid=track.sid, name=track.name, kind=track.kind, enabled=track.enabled
                )
            )
        return remote

    def seed(self, room: Room, me: Participant) -> None:
        """Everyone in ``room`` but ``me``, as ``connected`` tells the SDK."""
        for other in room.participants.values():
            if other is not me:
                self.remotes[other.identity] = self.remote_for(other)

    def participants(self) -> list[s.RemoteParticipant]:
        return list(self.remotes.values())

    def on_roster(self, event: RosterEvent) -> s.RemoteParticipant | None:
        """The participant state the SDK must be sent for ``event`` (None: nothing to tell).

        A participant that left goes out once more as ``disconnected`` with no tracks;
        ``reconnecting``/``connected`` become the SDK's ``participantReconnecting`` /
        ``participantReconnected``.  Every update but a join raises the revision.
        """
        if isinstance(event, ParticipantJoined):
            remote = self.remote_for(event.participant)
            self.remotes[remote.identity] = remote
            return remote
        subject = getattr(event, "participant", None)
        if not isinstance(subject, Participant):
            return None  # a room event: nothing the SDK shows per participant
        if isinstance(event, ParticipantLeft):
            gone = self.remotes.pop(subject.identity, None)
            if gone is None:
                return None
            gone.state = "disconnected"
            gone.tracks = []
            return _bumped(gone)
        found = self.remotes.get(subject.identity)
        if found is None:
            return None
        if isinstance(event, ParticipantReconnecting | ParticipantReconnected):
            away = isinstance(event, ParticipantReconnecting)
            found.state = "reconnecting" if away else "connected"
            return _bumped(found)
        if isinstance(event, TrackPublished):
            track = event.track
            if any(t.sid == track.sid for t in found.tracks):
                return None
            found.tracks.append(
                s.RemoteTrack(
                    sid=track.sid, name=track.name, kind=track.kind, enabled=track.enabled
                )
            )
            return _bumped(found)
        if isinstance(event, TrackUnpublished):
            found.tracks = [t for t in found.tracks if t.sid != event.track.sid]
            return _bumped(found)
        if isinstance(event, TrackEnabled | TrackDisabled):
            for t in found.tracks:
                if t.sid == event.track.sid:
                    t.enabled = event.track.enabled
            return _bumped(found)
        return None


def _bumped(remote: s.RemoteParticipant) -> s.RemoteParticipant:
    remote.revision += 1
    return remote


@dataclass
class Reconciled:
    """What one new client state changed (``LocalTracks.apply``)."""

    #: the published verdicts changed: the client is sent ``published`` again
    changed: bool
    #: the client's audio and data tracks now, by MediaStreamTrack id
    audio: dict[str, s.LocalTrack] = field(default_factory=dict)
    data: dict[str, s.LocalTrack] = field(default_factory=dict)
    #: MT SIDs of the audio and data tracks it stopped publishing
    unpublished: list[str] = field(default_factory=list)
    unpublished_data: list[str] = field(default_factory=list)


class LocalTracks:
    """The client's tracks as the server took them: an ``MT`` SID per audio and data track
    (by its MediaStreamTrack id), an error per track of another kind."""

    def __init__(self) -> None:
        self.published: dict[str, str] = {}
        self.data: dict[str, str] = {}
        self.errors: dict[str, e.TwilioVideoError] = {}
        self.revision = 0
        #: the last client state applied (an older one is ignored)
        self.local_revision = -1

    def apply(self, state: s.LocalParticipant) -> Reconciled | None:
        """Take the client's state; None when it is not newer than the last one taken."""
        if state.revision <= self.local_revision:
            return None
        self.local_revision = state.revision
        done = Reconciled(changed=False)
        for track in state.tracks:
            if track.kind == "data":
                done.data[track.id] = track
                if track.id not in self.data:
                    self.data[track.id] = new_sid(TRACK)
                    done.changed = True
            elif track.kind != "audio":
                if track.id not in self.errors:
                    self.errors[track.id] = e.TRACK_KIND_NOT_SUPPORTED
                    done.changed = True
            else:
                done.audio[track.id] = track
                if track.id not in self.published:
                    self.published[track.id] = new_sid(TRACK)
                    done.changed = True
        for gone in [tid for tid in self.published if tid not in done.audio]:
            done.unpublished.append(self.published.pop(gone))
        for gone in [tid for tid in self.data if tid not in done.data]:
            done.unpublished_data.append(self.data.pop(gone))
        ids = {t.id for t in state.tracks}
        for gone in [tid for tid in self.errors if tid not in ids]:
            del self.errors[gone]
            done.changed = True
        if done.unpublished or done.unpublished_data:
            done.changed = True
        if done.changed:
            self.revision += 1
        return done

    def published_state(self) -> tuple[int, list[s.PublishedTrack]]:
        """The ``published`` the SDK is sent: its revision and a verdict per track."""
        tracks = [s.PublishedTrack(tid, sid) for tid, sid in self.published.items()]
        tracks += [s.PublishedTrack(tid, sid) for tid, sid in self.data.items()]
        tracks += [s.PublishedTrack(tid, None, err) for tid, err in self.errors.items()]
        return (max(1, self.revision), tracks)
