"""The owner of recordings, compositions and composition hooks (issue 23).

``MediaService`` reacts to the rooms owner's events (a track to record was published or
unpublished, a room completed) and to the REST handlers' calls; it owns the records
(``twilio/media_rest.py`` formats them), the recorders (one writer thread each), the
composition tasks (one named task per composition, awaiting a worker process through
``CompositionWorkers``) and the media store.  Callbacks go out through the room callbacks
module (``StatusCallbacks.send``): ``recording-*`` to the room's ``StatusCallback`` with
the room's sequence numbers, ``composition-*`` to the composition's own.

What it knows of a room is a ``RoomRef`` (SID, name, its start on the monotonic clock,
its callback): it does not reach into the rooms owner.  Which tracks are recorded is
decided by ``recording_rules.RoomRecorder``, a listener of the rooms owner.

Every change of a record is written through to ``mediadb.MediaDb`` (SQLite beside the
media); a restarted service loads the records, finishes the recordings and runs again
the compositions an earlier process left unfinished (``start``).

Why one module: it is the lifecycle of the media resources
(a recording from start to completed/failed/deleted, a composition from enqueued to
available, the hooks that create compositions, recovery after a restart) and the
callbacks each step sends; persistence is one ``_save`` call per step.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import av

from mixer_ext.roomserver.compose.spec import (
    SAMPLE_RATE,
    CompositionJob,
    CompositionSpecError,
    Source,
    plan,
)
from mixer_ext.roomserver.compose.workers import CompositionFailed, CompositionRunner
from mixer_ext.roomserver.mediadb import MediaDb
from mixer_ext.roomserver.recorder import (
    RecordingResult,
    RecordingTags,
    TrackRecorder,
    scan_recording,
)
from mixer_ext.roomserver.storage import MediaStore, StorageFull
from mixer_ext.roomserver.twilio import media_rest as m
from mixer_ext.roomserver.twilio.rest import RestError, iso, not_found, now_utc
from mixer_ext.roomserver.twilio.sids import new_sid
from mixer_ext.tasks import stop_tasks

log = logging.getLogger(__name__)

#: records kept (the oldest forgotten first); deleted ones count until they go
HISTORY = 10_000
#: seconds between two retention sweeps of the media store
RETENTION_PERIOD = 3600.0

_R = TypeVar("_R")

#: ``send(url, method, params)``: one status callback to deliver
Send = Callable[[str, str, dict[str, str]], None]


@dataclass
class RoomRef:
    """What the media service needs to know of a room."""

    sid: str
    name: str
    #: when the room started, on ``time.monotonic()`` (recording offsets count from it)
    started: float
    status_callback: str | None = None
    status_callback_method: str = "POST"
    room_type: str = "group"
    status: str = "in-progress"


@dataclass
class _Live:
    record: m.RecordingRecord
    recorder: TrackRecorder
    identity: str
    room: RoomRef


class MediaService:
    """Recordings, compositions and hooks (see the module docstring)."""

    def __init__(
        self,
        store: MediaStore,
        workers: CompositionRunner,
        *,
        account_sid: str,
        send: Send,
        next_sequence: Callable[[str], int],
        db: MediaDb | None = None,
    ) -> None:
        self.store = store
        #: where the records survive a restart (None: kept in memory only, for unit tests)
        self.db = db
        self.workers = workers
        self.account_sid = account_sid
        self._send = send
        self._next_sequence = next_sequence
        self.recordings: OrderedDict[str, m.RecordingRecord] = OrderedDict()
        self.compositions: OrderedDict[str, m.CompositionRecord] = OrderedDict()
        self.hooks: OrderedDict[str, m.HookRecord] = OrderedDict()
        self._live: dict[str, _Live] = {}  # track SID -> its recording in progress
        self._finishing: dict[str, _Live] = {}  # recording SID -> closed, file not done yet
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: rooms completed whose recordings are still being finished, for the hooks
        self._closing: dict[str, RoomRef] = {}
        self._retention: asyncio.Task[None] | None = None
        #: records created before this are an earlier process's (its rooms are gone)
        self._started_at = now_utc()

    def start(self) -> None:
        """Load the records of an earlier process (``db``), then, in a task: adopt the
        recordings already stored, resume the compositions left unfinished, and sweep for
        retention (hourly, in a thread: both walk the directory)."""
        if self._retention is None:
            self._load()
            self._retention = asyncio.create_task(self._sweep(), name="media-adopt-retention")

    def _load(self) -> None:
        if self.db is None:
            return
        for r in self.db.load(m.RecordingRecord):
            self.recordings[r.sid] = r
        for c in self.db.load(m.CompositionRecord):
            self.compositions[c.sid] = c
        for h in self.db.load(m.HookRecord):
            self.hooks[h.sid] = h
        log.info(
            "media records loaded: %d recordings, %d compositions, %d hooks",
            len(self.recordings),
            len(self.compositions),
            len(self.hooks),
        )

    def _save(self, record: m.RecordingRecord | m.CompositionRecord | m.HookRecord) -> None:
        """Keep ``record``'s new state for a restart (a failing database is logged: the
        service goes on from memory)."""
        if self.db is not None:
            try:
                self.db.save(record)
            except (sqlite3.Error, OSError) as exc:
                log.warning("media record %s not saved: %s", record.sid, exc)

    def _orphans(self) -> dict[str, m.RecordingRecord]:
        """Recordings ``processing`` with no recorder here: an earlier process stopped
        (or was killed) while writing them."""
        writing = {live.record.sid for live in [*self._live.values(), *self._finishing.values()]}
        return {
            r.sid: r
            for r in self.recordings.values()
            if r.status == "processing" and r.sid not in writing
        }

    async def adopt(self) -> int:
        """Make records of the recordings in the store that no record describes (left by
        an earlier process without a database), and finish the records an earlier process
        left ``processing``: ``completed`` from the files' own tags and payloads (a killed
        recorder's file decodes up to its last second), ``failed`` with the reason when
        the file is missing or unreadable.  The files are read in a thread.  Returns how
        many records were made or finished."""
        known = {r.key for r in self.recordings.values()}
        orphans = self._orphans()
        found, finished = await asyncio.to_thread(
            self._scan_stored, known, {r.sid: r.key for r in orphans.values()}
        )
        known = {r.key for r in self.recordings.values()}  # (the loop went on meanwhile)
        adopted = [r for r in found if r.key not in known]
        for record in adopted:
            self._remember(self.recordings, record.sid, record)
            self._save(record)
        for sid, outcome in finished.items():
            record = orphans[sid]
            if record.status != "processing":
                continue
            if isinstance(outcome, str):
                record.status, record.error = "failed", outcome
            else:
                record.status = "completed"
                record.duration, record.size, record.offset_ms = outcome
            self._save(record)
        if adopted or finished:
            log.info(
                "adopted %d recordings found in the media store, finished %d left processing",
                len(adopted),
                len(finished),
            )
        return len(adopted) + len(finished)

    def _scan_stored(
        self, known: set[str], orphans: dict[str, str]
    ) -> tuple[list[m.RecordingRecord], dict[str, tuple[float, int, int] | str]]:
        """Records of the stored recordings not in ``known``, and for each orphan (SID ->
        key) its ``(duration, size, offset_ms)`` or why it failed (blocking: a thread's
        work)."""
        finished: dict[str, tuple[float, int, int] | str] = {}
        for sid, key in orphans.items():
            path = self.store.readable(key)
            if path is None:
                finished[sid] = "the room server stopped while recording; no media was stored"
                continue
            try:
                tags, end = scan_recording(path)
            except (OSError, ValueError, av.error.FFmpegError) as exc:
                finished[sid] = f"the room server stopped while recording; unreadable: {exc}"
                continue
            offset = int(tags.get("OFFSET_MS", "0") or 0)
            finished[sid] = (end / SAMPLE_RATE, path.stat().st_size, offset)
        adopted: list[m.RecordingRecord] = []
        for key in self.store.keys("recordings"):
            path = self.store.readable(key)
            if key in known or path is None:
                continue
            try:
                tags, end = scan_recording(path)
            except (OSError, ValueError, av.error.FFmpegError) as exc:
                log.warning("recording %s not adopted: %s", key, exc)
                continue
            created = tags.get("CREATED", "")
            try:
                when = datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                when = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
            sid = path.stem
            adopted.append(
                m.RecordingRecord(
                    sid=sid,
                    account_sid=self.account_sid,
                    room_sid=tags.get("ROOM_SID", key.split("/")[1]),
                    participant_sid=tags.get("PARTICIPANT_SID", ""),
                    source_sid=tags.get("TRACK_SID", ""),
                    track_name=tags.get("TRACK_NAME", sid),
                    key=key,
                    offset_ms=int(tags.get("OFFSET_MS", "0") or 0),
                    status="completed",
                    size=path.stat().st_size,
                    duration=end / SAMPLE_RATE,
                    created=when,
                )
            )
        return sorted(adopted, key=lambda r: r.created), finished

    async def _sweep(self) -> None:
        try:
            await self.adopt()
        except OSError as exc:
            log.warning("adopting stored recordings failed: %s", exc)
        await self._discard_partial()
        self._resume_compositions()
        self._reconcile_hooks()
        while True:
            try:
                gone = set(await asyncio.to_thread(self.store.expire))
            except OSError as exc:
                log.warning("media retention sweep failed: %s", exc)
                gone = set()
            for record in list(self.recordings.values()) + list(self.compositions.values()):
                if record.key in gone and record.status == "completed":
                    record.status = "deleted"
                    self._save(record)
            await asyncio.sleep(RETENTION_PERIOD)

    async def _discard_partial(self) -> None:
        """Delete what an earlier process's composition writers left half-written (the
        ``.part`` files engine.compose renames when complete, the runner's job/status
        files): never served, never finished.  The compositions they belonged to, if
        unfinished, run again from the start (``_resume_compositions``).  Kept: those of
        compositions running here already, and, with a runner whose work survives a
        restart (a Kubernetes Job), of the unfinished ones it will follow."""
        keep = set(self._tasks)
        if getattr(self.workers, "survives_restart", False):
            keep |= {
                c.sid for c in self.compositions.values() if c.status in ("enqueued", "processing")
            }
        try:
            gone = await asyncio.to_thread(self.store.discard_partial, keep)
        except OSError as exc:
            log.warning("leftover partial files not swept: %s", exc)
            return
        if gone:
            log.info("swept %d partial files an earlier process left: %s", len(gone), gone)

    def _reconcile_hooks(self) -> None:
        """Compose by the enabled hooks the rooms an earlier process ended without doing
        so: it stopped (or was killed) before the room completed, or before the hook's
        composition was enqueued.  Such a room has completed recordings made before this
        process started and no composition by that hook; a hook composes only rooms that
        ended after it was created, as it would have live.  (When the history limit has
        dropped compositions, rooms older than the oldest kept one are left alone.)"""
        hooks = [h for h in self.hooks.values() if h.enabled]
        if not hooks:
            return
        ended: dict[str, datetime] = {}
        for r in self.recordings.values():
            if r.status == "completed" and r.created < self._started_at:
                end = r.created + timedelta(seconds=r.duration)
                ended[r.room_sid] = max(ended.get(r.room_sid, end), end)
        done = {(c.room_sid, c.hook_sid) for c in self.compositions.values() if c.hook_sid}
        horizon = None
        if len(self.compositions) >= HISTORY:
            horizon = next(iter(self.compositions.values())).created
        for room_sid, end in sorted(ended.items(), key=lambda item: item[1]):
            if self.is_recording(room_sid) or room_sid in self._closing:
                continue
            if horizon is not None and end < horizon:
                continue
            todo = [h for h in hooks if (room_sid, h.sid) not in done and h.created <= end]
            if todo:
                log.info(
                    "room %s ended while the room server was down: composed by %s",
                    room_sid,
                    ", ".join(h.sid for h in todo),
                )
                self._compose_by_hooks(room_sid, todo)

    # ------------------------------------------------------------------ recordings
    def start_recording(
        self,
        room: RoomRef,
        participant_sid: str,
        identity: str,
        track_sid: str,
        track_name: str,
    ) -> Callable[[bytes, int], None] | None:
        """Record a published track; returns the sink for its payloads (None: not recording).

        The sink (``sink(payload, rtp_timestamp)``) is called on the loop for each Opus
        payload and returns at once.
        """
        if track_sid in self._live:
            return self._live[track_sid].recorder.push
        sid = new_sid(m.RECORDING)
        record = m.RecordingRecord(
            sid=sid,
            account_sid=self.account_sid,
            room_sid=room.sid,
            participant_sid=participant_sid,
            source_sid=track_sid,
            track_name=track_name or track_sid,
            key=f"recordings/{room.sid}/{sid}.mka",
            status_callback=room.status_callback,
            status_callback_method=room.status_callback_method,
        )
        self._remember(self.recordings, sid, record)
        try:
            self.store.ensure_space()
            path = self.store.writable(record.key)
        except (StorageFull, OSError) as exc:
            record.status, record.error = "failed", str(exc)
            self._save(record)
            log.warning("recording %s of %s failed: %s", sid, track_sid, exc)
            self._room_event(room, "recording-failed", record, identity)
            return None
        loop = asyncio.get_running_loop()

        def done(result: RecordingResult) -> None:  # in the writer thread
            loop.call_soon_threadsafe(self._finished, sid, result)

        recorder = TrackRecorder(
            path,
            RecordingTags(
                room.sid,
                record.track_name,
                identity,
                extra={
                    "TRACK_SID": track_sid,
                    "PARTICIPANT_SID": participant_sid,
                    "CREATED": iso(record.created) or "",
                },
            ),
            room_start=room.started,
            clock=time.monotonic,
            on_done=done,
        )
        self._live[track_sid] = _Live(record, recorder, identity, room)
        self._save(record)
        log.info("recording %s: %s/%s (%s)", sid, room.sid, track_sid, record.track_name)
        self._room_event(room, "recording-started", record, identity)
        return recorder.push

    def stop_recording(self, track_sid: str) -> None:
        """The track was unpublished, left, or is no longer selected: finish its file.

        A later ``start_recording`` of the same track makes a new recording at once (its
        file finishes in the background; ``_finished`` finds it by recording SID).
        """
        live = self._live.pop(track_sid, None)
        if live is not None:
            self._finishing[live.record.sid] = live
            live.recorder.close()

    def is_recording(self, room_sid: str) -> bool:
        """Any recording of the room still open or still being finished."""
        lives = [*self._live.values(), *self._finishing.values()]
        return any(live.room.sid == room_sid for live in lives)

    def _finished(self, sid: str, result: RecordingResult) -> None:
        live = self._finishing.pop(sid, None)
        if live is None:  # the writer ended on its own (a failed disk): forget the live one
            live = next((v for v in self._live.values() if v.record.sid == sid), None)
            if live is None:
                return
            del self._live[live.record.source_sid]
        record = live.record
        offset = live.recorder.offset_ms
        record.offset_ms = offset if offset is not None else 0
        record.size, record.duration = result.size, result.duration
        self.store.commit(record.key)
        if record.status == "deleted":
            self.store.delete(record.key)
        elif result.error is not None:
            record.status, record.error = "failed", result.error
            self._room_event(live.room, "recording-failed", record, live.identity)
        else:
            record.status = "completed"
            self._room_event(live.room, "recording-completed", record, live.identity)
        self._save(record)
        self._maybe_hooks(live.room.sid)

    def room_completed(self, room: RoomRef) -> None:
        """The room ended: every recording in it finishes; then the hooks compose it."""
        room.status = "completed"
        self._closing[room.sid] = room
        for live in list(self._live.values()):
            if live.room.sid == room.sid:
                self.stop_recording(live.record.source_sid)
        self._maybe_hooks(room.sid)

    def _maybe_hooks(self, room_sid: str) -> None:
        room = self._closing.get(room_sid)
        if room is None or self.is_recording(room_sid):
            return
        del self._closing[room_sid]
        if not any(
            r.room_sid == room_sid and r.status == "completed" for r in self.recordings.values()
        ):
            return
        self._compose_by_hooks(room_sid, [h for h in self.hooks.values() if h.enabled])

    def _compose_by_hooks(self, room_sid: str, hooks: list[m.HookRecord]) -> None:
        for hook in hooks:
            spec = m.CompositionCreate(
                room_sid=room_sid,
                audio_sources=hook.audio_sources,
                audio_sources_excluded=hook.audio_sources_excluded,
                trim=hook.trim,
                format=hook.format,
                status_callback=hook.status_callback,
                status_callback_method=hook.status_callback_method,
            )
            try:
                record = self.create_composition(spec, hook_sid=hook.sid)
            except RestError as exc:
                log.warning("hook %s: room %s not composed: %s", hook.sid, room_sid, exc)
            else:
                log.info("hook %s: room %s composed as %s", hook.sid, room_sid, record.sid)

    def recording(self, sid: str, room_sid: str | None = None) -> m.RecordingRecord:
        record = self.recordings.get(sid)
        if record is None or (room_sid is not None and record.room_sid != room_sid):
            raise not_found(f"/Recordings/{sid[:40]}")
        return record

    def delete_recording(self, sid: str, room_sid: str | None = None) -> None:
        """Delete the media now (or when its recorder finishes); the metadata stays."""
        record = self.recording(sid, room_sid)
        if record.status == "processing":
            raise RestError(400, m.INVALID_PARAMETER, "a recording in progress cannot be deleted")
        record.status = "deleted"
        record.size = 0
        self._save(record)
        self.store.delete(record.key)

    def _room_event(
        self, room: RoomRef, event: str, record: m.RecordingRecord, identity: str
    ) -> None:
        if not room.status_callback:
            return
        params = {
            "AccountSid": self.account_sid,
            "RoomName": room.name,
            "RoomSid": room.sid,
            "RoomStatus": room.status,
            "RoomType": room.room_type,
            "StatusCallbackEvent": event,
            "Timestamp": iso(now_utc()) or "",
            "SequenceNumber": str(self._next_sequence(room.sid)),
            **m.recording_params(record, event, identity),
        }
        self._send(room.status_callback, room.status_callback_method, params)

    # ------------------------------------------------------------------ compositions
    def create_composition(
        self, spec: m.CompositionCreate, hook_sid: str | None = None
    ) -> m.CompositionRecord:
        """Check ``spec`` against the room's recordings and enqueue it (or raise RestError)."""
        sid = new_sid(m.COMPOSITION)
        key = f"compositions/{sid}.{spec.format}"
        job = self._plan(spec, key)
        record = m.CompositionRecord(
            sid=sid,
            account_sid=self.account_sid,
            room_sid=spec.room_sid,
            audio_sources=spec.audio_sources,
            audio_sources_excluded=spec.audio_sources_excluded,
            trim=spec.trim,
            format=spec.format,
            key=key,
            status_callback=spec.status_callback,
            status_callback_method=spec.status_callback_method,
            hook_sid=hook_sid,
        )
        self._remember(self.compositions, sid, record)
        self._save(record)
        self._composition_event(record, "composition-enqueued")
        self._run(record, job)
        return record

    def _plan(self, spec: m.CompositionCreate, key: str) -> CompositionJob:
        sources = self._sources(spec.room_sid)
        if not sources:
            raise RestError(
                400, m.INVALID_PARAMETER, f"room {spec.room_sid[:40]} has no completed recordings"
            )
        try:
            return plan(
                sources,
                self.store.writable(key),
                fmt=spec.format,
                audio_sources=spec.audio_sources,
                excluded=spec.audio_sources_excluded,
                trim=spec.trim,
            )
        except CompositionSpecError as exc:
            raise RestError(400, m.INVALID_PARAMETER, str(exc)) from None

    def _run(self, record: m.CompositionRecord, job: CompositionJob) -> None:
        sid = record.sid
        task = asyncio.create_task(self._compose(record, job), name=f"composition-{sid}")
        self._tasks[sid] = task
        task.add_done_callback(lambda _t: self._tasks.pop(sid, None))

    def _resume_compositions(self) -> None:
        """Run again, from the start, the compositions an earlier process left
        ``enqueued`` or ``processing`` (their worker died with it); one whose recordings
        are gone fails with the reason.  Their callbacks go on from where they were
        (``composition-started`` again when the new run starts)."""
        for record in list(self.compositions.values()):
            if record.status not in ("enqueued", "processing") or record.sid in self._tasks:
                continue
            record.status, record.progress = "enqueued", 0.0
            spec = m.CompositionCreate(
                room_sid=record.room_sid,
                audio_sources=record.audio_sources,
                audio_sources_excluded=record.audio_sources_excluded,
                trim=record.trim,
                format=record.format,
                status_callback=record.status_callback,
                status_callback_method=record.status_callback_method,
            )
            try:
                job = self._plan(spec, record.key)
            except (RestError, OSError) as exc:
                reason = exc.message if isinstance(exc, RestError) else str(exc)
                record.error = f"the room server restarted while composing; {reason}"
                self._composition_step(record, "fail")
                continue
            log.info("composition %s: run again after a restart", record.sid)
            self._save(record)
            self._run(record, job)

    def _sources(self, room_sid: str) -> list[Source]:
        out = []
        for r in self.recordings.values():
            if r.room_sid != room_sid or r.status != "completed":
                continue
            path = self.store.readable(r.key)
            if path is None:
                continue
            out.append(
                Source(
                    r.track_name,
                    path,
                    r.offset_ms * SAMPLE_RATE // 1000,
                    round(r.duration * SAMPLE_RATE),
                )
            )
        return out

    async def _compose(self, record: m.CompositionRecord, job: CompositionJob) -> None:
        def started() -> None:
            self._composition_step(record, "start")

        def progress(fraction: float) -> None:
            record.progress = fraction
            if fraction < 1.0:
                self._composition_step(record, "progress")

        try:
            self.store.ensure_space()
            result = await self.workers.run(job, progress, started)
        except (CompositionFailed, StorageFull, OSError) as exc:
            record.error = str(exc)
            log.warning("composition %s failed: %s", record.sid, exc)
            self._composition_step(record, "fail")
            return
        self.store.commit(record.key)
        record.duration = result.duration
        record.size = result.size
        record.bitrate = round(result.size * 8 / result.duration / 1000) if result.duration else 0
        self.store.commit(m.levels_key(record))
        if record.status == "deleted":
            self._save(record)
            self.store.delete(record.key)
            self.store.delete(m.levels_key(record))
            return
        self._composition_step(record, "complete")
        log.info(
            "composition %s completed: %.1f s, %d bytes", record.sid, record.duration, record.size
        )

    def _composition_step(self, record: m.CompositionRecord, event: str) -> None:
        callback = m.composition_step(record, event)
        self._save(record)
        if callback is not None:
            self._composition_event(record, callback)

    def _composition_event(self, record: m.CompositionRecord, event: str) -> None:
        if record.status_callback:
            params = m.composition_params(record, event)
            self._send(record.status_callback, record.status_callback_method, params)

    def composition(self, sid: str) -> m.CompositionRecord:
        record = self.compositions.get(sid)
        if record is None:
            raise not_found(f"/Compositions/{sid[:40]}")
        return record

    def delete_composition(self, sid: str) -> None:
        record = self.composition(sid)
        m.composition_step(record, "delete")
        self._save(record)
        task = self._tasks.get(sid)
        if task is not None:
            task.cancel()
        self.store.delete(record.key)
        self.store.delete(m.levels_key(record))

    # ------------------------------------------------------------------ hooks
    def create_hook(self, fields: dict[str, object]) -> m.HookRecord:
        name = fields["friendly_name"]
        if any(h.friendly_name == name for h in self.hooks.values()):
            raise RestError(409, m.INVALID_PARAMETER, "a hook with this FriendlyName exists")
        hook = m.HookRecord(sid=new_sid(m.HOOK), account_sid=self.account_sid, **fields)  # type: ignore[arg-type]
        self._remember(self.hooks, hook.sid, hook)
        self._save(hook)
        return hook

    def hook(self, sid: str) -> m.HookRecord:
        hook = self.hooks.get(sid)
        if hook is None:
            raise not_found(f"/CompositionHooks/{sid[:40]}")
        return hook

    def update_hook(self, sid: str, fields: dict[str, object]) -> m.HookRecord:
        hook = self.hook(sid)
        for name, value in fields.items():
            setattr(hook, name, value)
        hook.updated = now_utc()
        self._save(hook)
        return hook

    def delete_hook(self, sid: str) -> None:
        self.hook(sid)
        del self.hooks[sid]
        if self.db is not None:
            try:
                self.db.forget(m.HookRecord, sid)
            except (sqlite3.Error, OSError) as exc:
                log.warning("hook %s not deleted from the media records: %s", sid, exc)

    # ------------------------------------------------------------------ lifecycle
    def _remember(self, table: OrderedDict[str, _R], sid: str, record: _R) -> None:
        table[sid] = record
        while len(table) > HISTORY:
            _sid, old = table.popitem(last=False)
            if self.db is not None:
                try:
                    self.db.forget(type(old), _sid)  # type: ignore[arg-type]
                except (sqlite3.Error, OSError) as exc:
                    log.warning("media record %s not forgotten: %s", _sid, exc)

    async def stop(self) -> None:
        """Finish every recording (files closed) and cancel compositions in progress."""
        for track_sid in list(self._live):
            self.stop_recording(track_sid)
        closing = list(self._finishing.values())
        await asyncio.gather(*(asyncio.to_thread(live.recorder.join, 10.0) for live in closing))
        self.workers.close()  # before the runs are cancelled: a Job is left to finish
        await stop_tasks([*self._tasks.values(), self._retention], 5.0, log)
        if self.db is not None:
            self.db.close()
