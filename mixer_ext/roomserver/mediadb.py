"""The media service's records in SQLite: the only roomserver module that knows SQL.

Recordings, compositions and composition hooks (``twilio/media_rest.py``'s records) are
kept in ``media.sqlite3`` beside the files they describe (``MIXER_RECORDINGS_DIR``), so a
room server restarted on the same directory, also after a SIGKILL, lists the same SIDs
with the same statuses, deleted recordings' metadata included.  The file is opened the
project's way (``sqlitedb``: WAL, ``synchronous=NORMAL``, ``MIGRATIONS`` in
``user_version``).

A row is a record's SID, its creation time (the order lists and adoption keep) and the
record as JSON: the records are the wire model's own dataclasses, and a field added
later reads back with its default (unknown keys are ignored), so most record changes
need no migration.  Calls are single-row writes and one read per table at start; the
owner (``recordings.MediaService``) makes them on its loop, as ``api/store.py`` does.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from mixer_ext.errors import ConfigError
from mixer_ext.roomserver.twilio.media_rest import CompositionRecord, HookRecord, RecordingRecord
from mixer_ext.sqlitedb import open_db, transaction

#: the file's name inside ``MIXER_RECORDINGS_DIR``
FILENAME = "media.sqlite3"

MIGRATIONS: tuple[str, ...] = (
    # 1: one table per kind of record
    """
    CREATE TABLE recordings (sid TEXT PRIMARY KEY, created REAL NOT NULL, data TEXT NOT NULL);
    CREATE INDEX recordings_order ON recordings (created, sid);
    CREATE TABLE compositions (sid TEXT PRIMARY KEY, created REAL NOT NULL, data TEXT NOT NULL);
    CREATE INDEX compositions_order ON compositions (created, sid);
    CREATE TABLE hooks (sid TEXT PRIMARY KEY, created REAL NOT NULL, data TEXT NOT NULL);
    CREATE INDEX hooks_order ON hooks (created, sid);
    """,
)

Record = RecordingRecord | CompositionRecord | HookRecord
_T = TypeVar("_T", RecordingRecord, CompositionRecord, HookRecord)
_TABLES: dict[type, str] = {
    RecordingRecord: "recordings",
    CompositionRecord: "compositions",
    HookRecord: "hooks",
}
#: the records' fields that hold a datetime (kept as ISO 8601 text)
_TIMES = ("created", "completed", "deleted", "updated")


def _encode(record: Record) -> str:
    data = dataclasses.asdict(record)
    for name in _TIMES:
        if isinstance(data.get(name), datetime):
            data[name] = data[name].isoformat()
    return json.dumps(data, separators=(",", ":"))


def _decode(cls: type[_T], text: str) -> _T:
    data: dict[str, Any] = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    kept = {k: v for k, v in data.items() if k in known}
    for name in _TIMES:
        if isinstance(kept.get(name), str):
            kept[name] = datetime.fromisoformat(kept[name])
    return cls(**kept)


class MediaDb:
    """The records of one media directory (see the module docstring).

    The file is opened (and created) on the first write, or at the first read when it
    exists: a server that never records or composes leaves no file behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_db(self.path, MIGRATIONS)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def save(self, record: Record) -> None:
        """Insert or replace ``record`` (its current state)."""
        table = _TABLES[type(record)]
        with transaction(self._db()) as db:
            db.execute(
                f"INSERT OR REPLACE INTO {table} (sid, created, data) VALUES (?,?,?)",
                (record.sid, record.created.timestamp(), _encode(record)),
            )

    def forget(self, cls: type[Record], sid: str) -> None:
        with transaction(self._db()) as db:
            db.execute(f"DELETE FROM {_TABLES[cls]} WHERE sid=?", (sid,))

    def load(self, cls: type[_T]) -> list[_T]:
        """Every record of the kind, oldest first (none when there is no file yet).

        Raises ``ConfigError`` naming the file when it cannot be read (not a database,
        not readable): a server that would start without its records would list them
        as gone."""
        if self._conn is None and not self.path.exists():
            return []
        sql = f"SELECT data FROM {_TABLES[cls]} ORDER BY created, sid"
        try:
            return [_decode(cls, row["data"]) for row in self._db().execute(sql).fetchall()]
        except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
            self.close()
            raise ConfigError(f"the media records {self.path} cannot be read: {exc}") from None
