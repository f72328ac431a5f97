"""Opening a SQLite state file the project's way, shared by the stores that own SQL.

``open_db`` gives a connection in WAL mode (readers never wait for the writer) with
``synchronous=NORMAL`` (a commit survives a crash of the process; a power cut may lose the
last commits, never corrupt the file), a busy timeout and rows by name; it upgrades the
schema with the store's ``migrations`` in order, counted in ``PRAGMA user_version``.
``transaction`` is ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception).

The stores (``api/store.py`` for the control plane, ``roomserver/mediadb.py`` for
recordings and compositions) keep their schema and every query; this module knows no table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[str]) -> None:
    """Run the migrations this file has not had yet, each in its own transaction."""
    version = schema_version(db)
    for number, script in enumerate(migrations[version:], start=version + 1):
        with transaction(db):
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={number}")


def open_db(path: Path | str, migrations: Sequence[str]) -> sqlite3.Connection:
    """A connection to ``path`` (created with its folder), in WAL mode, migrated."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    migrate(db, migrations)
    return db
