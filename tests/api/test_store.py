"""The control plane's SQLite store: WAL, migrations, paging, callbacks, restart safety."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from mixer_ext.api import resources as r
from mixer_ext.api.store import MIGRATIONS, Store
from tests.support.api import processor, streamer


def test_fresh_database_is_wal_and_migrated(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "api.db")
    assert store.journal_mode == "wal"
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    # opening again runs no migration twice
    again = Store(tmp_path / "sub" / "api.db")
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_a_version_1_database_gains_the_durable_stop(tmp_path: Path) -> None:
    """Schema 2 (issue 25.4): a worker's stop request outlives the API process."""
    db = tmp_path / "api.db"
    old = sqlite3.connect(db)
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    old.execute("INSERT INTO workers VALUES ('ZX1', 'local', '{\"pid\": 1}')")
    old.commit()
    old.close()
    store = Store(db)
    assert store.schema_version == len(MIGRATIONS) >= 2
    assert store.worker("ZX1") == ("local", {"pid": 1})
    assert store.stopping_workers() == {} and store.worker_stopping_since("ZX1") is None
    store.set_worker_stopping("ZX1", 123.5)
    store.close()
    again = Store(db)
    assert again.stopping_workers() == {"ZX1": 123.5}
    again.set_worker_stopping("ZX1", None)
    assert again.worker_stopping_since("ZX1") is None
    again.close()


def test_restart_keeps_everything(tmp_path: Path) -> None:
    db = tmp_path / "api.db"
    store = Store(db)
    p = processor()
    s = streamer()
    store.insert_processor(p)
    store.insert_streamer(s)
    store.set_worker(p.sid, "local", {"pid": 123, "start_time": 456})
    ended = replace(
        p, status=r.ProcessorStatus.ENDED, ended_reason="ended-via-api", date_updated=2e9
    )
    store.save_processor(ended, ["media-processor-started", "media-processor-ended"])
    store._db.close()  # as a killed API would leave it: no orderly close

    after = Store(db)
    assert after.processor(p.sid) == ended
    assert after.streamer(s.sid) == s
    assert after.worker(p.sid) == ("local", {"pid": 123, "start_time": 456})
    head = after.pending_callbacks()
    assert [c.params["SequenceNumber"] for c in head] == ["0"]
    after.callback_done(head[0].id)
    nxt = after.pending_callbacks()
    assert nxt[0].params["StatusCallbackEvent"] == "media-processor-ended"
    assert nxt[0].params["SequenceNumber"] == "1"
    after.close()


def test_callbacks_in_order_per_resource(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    a, b = processor(), processor()
    store.insert_processor(a)
    store.insert_processor(b)
    store.save_processor(a, ["one", "two"])
    store.save_processor(b, ["three"])
    heads = store.pending_callbacks()
    assert sorted(c.params["StatusCallbackEvent"] for c in heads) == ["one", "three"]
    store.callback_retry(heads[0].id, 99.0)
    assert store.pending_callbacks()[0].attempts == 1
    # no callback URL: nothing queued
    c = processor(status_callback=None)
    store.insert_processor(c)
    store.save_processor(c, ["x"])
    assert len(store.pending_callbacks()) == 2


def test_keyset_paging_and_filters(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    made = [streamer(date_created=1000.0 + i // 2) for i in range(7)]  # ties on the date
    for s in made:
        store.insert_streamer(s)
    store.save_streamer(replace(made[0], status=r.StreamerStatus.ENDED))
    seen: list[str] = []
    after = None
    while True:
        page, after = store.streamers(order="asc", after=after, limit=3)
        seen += [s.sid for s in page]
        if after is None:
            break
    expected = [s.sid for s in sorted(made, key=lambda s: (s.date_created, s.sid))]
    assert seen == expected
    desc, _ = store.streamers(limit=100)
    assert [s.sid for s in desc] == expected[::-1]
    ended, _ = store.streamers(status="ended")
    assert [s.sid for s in ended] == [made[0].sid]
    assert len(store.active_streamers()) == 6


def test_only_the_store_speaks_sql() -> None:
    root = Path(__file__).resolve().parents[2] / "mixer_ext" / "api"
    for module in root.glob("*.py"):
        if module.name != "store.py":
            text = module.read_text()
            assert "sqlite3" not in text and "SELECT " not in text, module.name


def test_recordings(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    p = processor()
    rec = r.MediaRecording(
        sid=r.new_sid("KV"),
        account_sid=p.account_sid,
        processor_sid=p.sid,
        source_sid=None,
        status=r.RecordingStatus.PROCESSING,
        path="recordings/x.m4a",
        format="mp4",
        duration=None,
        media_size=None,
        date_created=1.0,
        date_updated=1.0,
    )
    store.insert_recording(rec)
    done = replace(rec, status=r.RecordingStatus.COMPLETED, duration=5, media_size=1000)
    store.save_recording(done)
    assert store.recording(rec.sid) == done
    assert store.recordings(processor_sid=p.sid)[0] == [done]
    assert store.recordings(processor_sid=r.new_sid("ZX"))[0] == []
    store.delete_recording(rec.sid)
    assert store.recording(rec.sid) is None
