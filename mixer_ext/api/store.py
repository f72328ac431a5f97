"""The control plane's state in SQLite: the only module that knows SQL or table names.

One file (``MIXER_API_DATABASE``), WAL mode (readers never wait for the writer),
``synchronous=NORMAL`` (a commit survives a crash of the API; a power cut may lose the
last commits, never corrupt the file). The schema is versioned with ``PRAGMA
user_version`` and upgraded by ``MIGRATIONS`` in order when the store opens. Everything
handed out is a plain frozen dataclass from ``resources``.

Calls are synchronous and small (indexed single-row reads and writes, one page of a
list); the API makes them on its event loop, which they hold for well under a
millisecond each.  Status callbacks wait in an outbox table, so a restart delivers what
was queued, in order, with its sequence numbers.

Why one module: it is the only code that knows table names; the schema,
its migrations and every query stay together on purpose.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_ext.api.resources import (
    MediaProcessor,
    MediaRecording,
    PageKey,
    PlayerStreamer,
    ProcessorStatus,
    RecordingStatus,
    StreamerStatus,
    processor_callback_params,
    streamer_callback_params,
)
from mixer_ext.sqlitedb import open_db, schema_version, transaction

MIGRATIONS: tuple[str, ...] = (
    # 1: the resources, the workers that run processors, the callback outbox
    """
    CREATE TABLE media_processors (
        sid TEXT PRIMARY KEY, account_sid TEXT NOT NULL, extension TEXT NOT NULL,
        extension_context TEXT NOT NULL, status TEXT NOT NULL, ended_reason TEXT,
        error_message TEXT, status_callback TEXT, status_callback_method TEXT NOT NULL,
        max_duration INTEGER NOT NULL, date_created REAL NOT NULL, date_updated REAL NOT NULL,
        streaming INTEGER NOT NULL DEFAULT 0, callback_seq INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX media_processors_order ON media_processors (date_created, sid);
    CREATE TABLE player_streamers (
        sid TEXT PRIMARY KEY, account_sid TEXT NOT NULL, video INTEGER NOT NULL,
        status TEXT NOT NULL, ended_reason TEXT, status_callback TEXT,
        status_callback_method TEXT NOT NULL, max_duration INTEGER NOT NULL,
        date_created REAL NOT NULL, date_updated REAL NOT NULL,
        callback_seq INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX player_streamers_order ON player_streamers (date_created, sid);
    CREATE TABLE media_recordings (
        sid TEXT PRIMARY KEY, account_sid TEXT NOT NULL, processor_sid TEXT NOT NULL,
        source_sid TEXT, status TEXT NOT NULL, path TEXT NOT NULL, format TEXT NOT NULL,
        duration INTEGER, media_size INTEGER,
        date_created REAL NOT NULL, date_updated REAL NOT NULL);
    CREATE INDEX media_recordings_order ON media_recordings (date_created, sid);
    CREATE TABLE workers (
        processor_sid TEXT PRIMARY KEY, launcher TEXT NOT NULL, handle TEXT NOT NULL);
    CREATE TABLE callbacks (
        id INTEGER PRIMARY KEY AUTOINCREMENT, resource_sid TEXT NOT NULL,
        url TEXT NOT NULL, method TEXT NOT NULL, params TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0);
    """,
    # 2: a worker asked to stop (SIGTERM) says since when, so an API restarted before the
    # worker exits still finishes it (recordings completed, SIGKILL after the grace)
    """
    ALTER TABLE workers ADD COLUMN stopping_since REAL;
    """,
)

_TABLES = {"processor": "media_processors", "streamer": "player_streamers"}


@dataclass(frozen=True)
class PendingCallback:
    id: int
    resource_sid: str
    url: str
    method: str
    params: dict[str, str]
    attempts: int
    next_attempt: float


class Store:
    def __init__(self, path: Path | str) -> None:
        self._db = open_db(path, MIGRATIONS)

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    @property
    def schema_version(self) -> int:
        return schema_version(self._db)

    @property
    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # ----------------------------------------------------------------- processors
    def insert_processor(self, p: MediaProcessor) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO media_processors (sid, account_sid, extension, extension_context,"
                " status, ended_reason, error_message, status_callback, status_callback_method,"
                " max_duration, date_created, date_updated, streaming)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    p.sid,
                    p.account_sid,
                    p.extension,
                    p.extension_context,
                    p.status.value,
                    p.ended_reason,
                    p.error_message,
                    p.status_callback,
                    p.status_callback_method,
                    p.max_duration,
                    p.date_created,
                    p.date_updated,
                    int(p.streaming),
                ),
            )

    def save_processor(self, p: MediaProcessor, events: Sequence[str] = (), now: float = 0) -> None:
        """Write the processor's new state and queue its callbacks, in one transaction."""
        with self._tx() as db:
            db.execute(
                "UPDATE media_processors SET status=?, ended_reason=?, error_message=?,"
                " date_updated=?, streaming=? WHERE sid=?",
                (
                    p.status.value,
                    p.ended_reason,
                    p.error_message,
                    p.date_updated,
                    int(p.streaming),
                    p.sid,
                ),
            )
            if p.status_callback:
                for event in events:
                    seq = self._take_seq(db, "processor", p.sid)
                    params = processor_callback_params(p, event, seq, now or p.date_updated)
                    self._enqueue(db, p.sid, p.status_callback, p.status_callback_method, params)

    def processor(self, sid: str) -> MediaProcessor | None:
        row = self._db.execute("SELECT * FROM media_processors WHERE sid=?", (sid,)).fetchone()
        return _processor(row) if row else None

    def processors(
        self,
        *,
        status: str | None = None,
        order: str = "desc",
        after: PageKey | None = None,
        limit: int = 50,
    ) -> tuple[list[MediaProcessor], PageKey | None]:
        rows, nxt = self._page("media_processors", {"status": status}, order, after, limit)
        return [_processor(r) for r in rows], nxt

    def count_active_processors(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM media_processors WHERE status=?",
            (ProcessorStatus.STARTED.value,),
        ).fetchone()
        return int(row[0])

    def active_processors(self) -> list[MediaProcessor]:
        rows = self._db.execute(
            "SELECT * FROM media_processors WHERE status=? ORDER BY date_created",
            (ProcessorStatus.STARTED.value,),
        ).fetchall()
        return [_processor(r) for r in rows]

    # ----------------------------------------------------------------- streamers
    def insert_streamer(self, s: PlayerStreamer) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO player_streamers (sid, account_sid, video, status, ended_reason,"
                " status_callback, status_callback_method, max_duration, date_created,"
                " date_updated) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    s.sid,
                    s.account_sid,
                    int(s.video),
                    s.status.value,
                    s.ended_reason,
                    s.status_callback,
                    s.status_callback_method,
                    s.max_duration,
                    s.date_created,
                    s.date_updated,
                ),
            )

    def save_streamer(self, s: PlayerStreamer, events: Sequence[str] = (), now: float = 0) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE player_streamers SET status=?, ended_reason=?, date_updated=? WHERE sid=?",
                (s.status.value, s.ended_reason, s.date_updated, s.sid),
            )
            if s.status_callback:
                for event in events:
                    seq = self._take_seq(db, "streamer", s.sid)
                    params = streamer_callback_params(s, event, seq, now or s.date_updated)
                    self._enqueue(db, s.sid, s.status_callback, s.status_callback_method, params)

    def streamer(self, sid: str) -> PlayerStreamer | None:
        row = self._db.execute("SELECT * FROM player_streamers WHERE sid=?", (sid,)).fetchone()
        return _streamer(row) if row else None

    def streamers(
        self,
        *,
        status: str | None = None,
        order: str = "desc",
        after: PageKey | None = None,
        limit: int = 50,
    ) -> tuple[list[PlayerStreamer], PageKey | None]:
        rows, nxt = self._page("player_streamers", {"status": status}, order, after, limit)
        return [_streamer(r) for r in rows], nxt

    def active_streamers(self) -> list[PlayerStreamer]:
        rows = self._db.execute(
            "SELECT * FROM player_streamers WHERE status IN (?, ?) ORDER BY date_created",
            (StreamerStatus.CREATED.value, StreamerStatus.STARTED.value),
        ).fetchall()
        return [_streamer(r) for r in rows]

    # ----------------------------------------------------------------- recordings
    def insert_recording(self, r: MediaRecording) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO media_recordings (sid, account_sid, processor_sid, source_sid,"
                " status, path, format, duration, media_size, date_created, date_updated)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r.sid,
                    r.account_sid,
                    r.processor_sid,
                    r.source_sid,
                    r.status.value,
                    r.path,
                    r.format,
                    r.duration,
                    r.media_size,
                    r.date_created,
                    r.date_updated,
                ),
            )

    def save_recording(self, r: MediaRecording) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE media_recordings SET status=?, duration=?, media_size=?, date_updated=?"
                " WHERE sid=?",
                (r.status.value, r.duration, r.media_size, r.date_updated, r.sid),
            )

    def set_recording_source(self, processor_sid: str, source_sid: str) -> int:
        """Set ``source_sid`` on the processor's recordings that have none; returns how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE media_recordings SET source_sid=? WHERE processor_sid=?"
                " AND source_sid IS NULL",
                (source_sid, processor_sid),
            )
            return cur.rowcount

    def delete_recording(self, sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM media_recordings WHERE sid=?", (sid,))

    def recording(self, sid: str) -> MediaRecording | None:
        row = self._db.execute("SELECT * FROM media_recordings WHERE sid=?", (sid,)).fetchone()
        return _recording(row) if row else None

    def recordings(
        self,
        *,
        status: str | None = None,
        processor_sid: str | None = None,
        source_sid: str | None = None,
        order: str = "desc",
        after: PageKey | None = None,
        limit: int = 50,
    ) -> tuple[list[MediaRecording], PageKey | None]:
        filters = {"status": status, "processor_sid": processor_sid, "source_sid": source_sid}
        rows, nxt = self._page("media_recordings", filters, order, after, limit)
        return [_recording(r) for r in rows], nxt

    # ----------------------------------------------------------------- workers
    def set_worker(self, processor_sid: str, launcher: str, handle: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers (processor_sid, launcher, handle) VALUES (?,?,?)",
                (processor_sid, launcher, json.dumps(handle)),
            )

    def worker(self, processor_sid: str) -> tuple[str, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT launcher, handle FROM workers WHERE processor_sid=?", (processor_sid,)
        ).fetchone()
        return (str(row[0]), json.loads(row[1])) if row else None

    def set_worker_stopping(self, processor_sid: str, since: float | None) -> None:
        """Mark the worker as asked to stop at ``since`` (None: no longer waited for)."""
        with self._tx() as db:
            db.execute(
                "UPDATE workers SET stopping_since=? WHERE processor_sid=?",
                (since, processor_sid),
            )

    def worker_stopping_since(self, processor_sid: str) -> float | None:
        """When this processor's worker was asked to stop (None: it was not, or is gone)."""
        row = self._db.execute(
            "SELECT stopping_since FROM workers WHERE processor_sid=?", (processor_sid,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def stopping_workers(self) -> dict[str, float]:
        """Processor SID -> when its worker was asked to stop, for workers not yet gone."""
        rows = self._db.execute(
            "SELECT processor_sid, stopping_since FROM workers WHERE stopping_since IS NOT NULL"
        ).fetchall()
        return {str(row[0]): float(row[1]) for row in rows}

    def drop_worker(self, processor_sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE processor_sid=?", (processor_sid,))

    # ----------------------------------------------------------------- callbacks
    @staticmethod
    def _take_seq(db: sqlite3.Connection, kind: str, sid: str) -> int:
        table = _TABLES[kind]
        row = db.execute(
            f"UPDATE {table} SET callback_seq = callback_seq + 1 WHERE sid=?"
            " RETURNING callback_seq - 1",
            (sid,),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _enqueue(
        db: sqlite3.Connection, sid: str, url: str, method: str, params: dict[str, str]
    ) -> None:
        db.execute(
            "INSERT INTO callbacks (resource_sid, url, method, params) VALUES (?,?,?,?)",
            (sid, url, method, json.dumps(params)),
        )

    def pending_callbacks(self) -> list[PendingCallback]:
        """The head of each resource's queue (callbacks go out in order per resource)."""
        rows = self._db.execute(
            "SELECT * FROM callbacks WHERE id IN"
            " (SELECT MIN(id) FROM callbacks GROUP BY resource_sid) ORDER BY id"
        ).fetchall()
        return [
            PendingCallback(
                r["id"],
                r["resource_sid"],
                r["url"],
                r["method"],
                json.loads(r["params"]),
                r["attempts"],
                r["next_attempt"],
            )
            for r in rows
        ]

    def callback_done(self, callback_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM callbacks WHERE id=?", (callback_id,))

    def callback_retry(self, callback_id: int, next_attempt: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE callbacks SET attempts = attempts + 1, next_attempt=? WHERE id=?",
                (next_attempt, callback_id),
            )

    # ----------------------------------------------------------------- paging
    def _page(
        self,
        table: str,
        filters: dict[str, str | None],
        order: str,
        after: PageKey | None,
        limit: int,
    ) -> tuple[list[sqlite3.Row], PageKey | None]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in filters.items():
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        desc = order == "desc"
        if after is not None:
            where.append(f"(date_created, sid) {'<' if desc else '>'} (?, ?)")
            args += [after.date_created, after.sid]
        direction = "DESC" if desc else "ASC"
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY date_created {direction}, sid {direction} LIMIT ?"
        rows = self._db.execute(sql, [*args, limit + 1]).fetchall()
        if len(rows) > limit:
            last = rows[limit - 1]
            return rows[:limit], PageKey(last["date_created"], last["sid"])
        return rows, None


def _processor(r: sqlite3.Row) -> MediaProcessor:
    return MediaProcessor(
        sid=r["sid"],
        account_sid=r["account_sid"],
        extension=r["extension"],
        extension_context=r["extension_context"],
        status=ProcessorStatus(r["status"]),
        ended_reason=r["ended_reason"],
        error_message=r["error_message"],
        status_callback=r["status_callback"],
        status_callback_method=r["status_callback_method"],
        max_duration=r["max_duration"],
        date_created=r["date_created"],
        date_updated=r["date_updated"],
        streaming=bool(r["streaming"]),
    )


def _streamer(r: sqlite3.Row) -> PlayerStreamer:
    return PlayerStreamer(
        sid=r["sid"],
        account_sid=r["account_sid"],
        video=bool(r["video"]),
        status=StreamerStatus(r["status"]),
        ended_reason=r["ended_reason"],
        status_callback=r["status_callback"],
        status_callback_method=r["status_callback_method"],
        max_duration=r["max_duration"],
        date_created=r["date_created"],
        date_updated=r["date_updated"],
    )


def _recording(r: sqlite3.Row) -> MediaRecording:
    return MediaRecording(
        sid=r["sid"],
        account_sid=r["account_sid"],
        processor_sid=r["processor_sid"],
        source_sid=r["source_sid"],
        status=RecordingStatus(r["status"]),
        path=r["path"],
        format=r["format"],
        duration=r["duration"],
        media_size=r["media_size"],
        date_created=r["date_created"],
        date_updated=r["date_updated"],
    )
