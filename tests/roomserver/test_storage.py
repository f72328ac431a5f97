"""Recording/composition storage (issue 23.6): keys, disk-space guard, retention, signed URLs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from mixer_ext.roomserver.storage import LocalMediaStore, MediaUrlSigner, StorageFull


def test_keys_are_checked_and_files_round_trip(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path, min_free_bytes=0)
    key = "recordings/RM1/RT1.mka"
    store.writable(key).write_bytes(b"x" * 10)
    store.commit(key)
    assert store.readable(key) == tmp_path / key
    assert store.size(key) == 10
    store.delete(key)
    assert store.readable(key) is None and store.size(key) == 0
    for bad in ("../etc/passwd", "recordings/../x.mka", "/abs/x.mka", "other/x.mka"):
        with pytest.raises(ValueError, match="not a media key"):
            store.writable(bad)


def test_disk_space_guard_names_the_setting(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path, min_free_bytes=1 << 62)
    with pytest.raises(StorageFull, match="MIXER_RECORDINGS_MIN_FREE_MB"):
        store.ensure_space()
    LocalMediaStore(tmp_path, min_free_bytes=0).ensure_space()


def test_retention_deletes_old_media_only(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path, retention_seconds=3600)
    old, new = "recordings/RM1/RT1.mka", "compositions/CJ1.mp4"
    for key in (old, new):
        store.writable(key).write_bytes(b"x")
    past = time.time() - 7200
    os.utime(tmp_path / old, (past, past))
    (tmp_path / "recordings" / "notes.txt").write_text("not media")
    assert store.expire() == [old]
    assert store.readable(new) is not None
    assert (tmp_path / "recordings" / "notes.txt").exists()
    assert LocalMediaStore(tmp_path).expire() == []  # retention 0: keep forever


def test_signed_urls_expire_and_cannot_be_altered() -> None:
    signer = MediaUrlSigner(b"s" * 32, ttl=60)
    key = "compositions/CJ1.mp4"
    expires, sig = signer.sign(key, now=1000.0)
    assert expires == 1060
    assert signer.verify(key, str(expires), sig, now=1059.0) == ""
    assert signer.verify(key, str(expires), sig, now=1061.0) == "the media URL has expired"
    assert signer.verify(key, str(expires + 600), sig, now=1000.0) == "bad signature"
    assert signer.verify("compositions/CJ2.mp4", str(expires), sig, now=1000.0) == "bad signature"
    assert signer.verify(key, "soon", sig) == "malformed media URL"
    with pytest.raises(ValueError, match="16 bytes"):
        MediaUrlSigner(b"short")


def test_media_db_keeps_records_across_a_reopen(tmp_path: Path) -> None:
    """The media records' SQLite file: WAL, migrated once, records read back equal, a
    field unknown to this version ignored, nothing created until the first write."""
    import json
    import sqlite3

    from mixer_ext.roomserver.mediadb import MIGRATIONS, MediaDb
    from mixer_ext.roomserver.twilio import media_rest as m

    path = tmp_path / "media" / "media.sqlite3"
    db = MediaDb(path)
    assert db.load(m.RecordingRecord) == [] and not path.exists()
    rec = m.RecordingRecord("RT1", "AC1", "RM1", "PA1", "TR1", "a", "recordings/RM1/RT1.mka")
    comp = m.CompositionRecord("CJ1", "AC1", "RM1", ["*"], [], True, "mp4", "compositions/CJ1.mp4")
    hook = m.HookRecord("HK1", "AC1", "h", True, ["a*"], [], False, "webm", None, "POST")
    for record in (rec, comp, hook):
        db.save(record)
    rec.status = "deleted"
    db.save(rec)
    db.close()  # (a killed server closes nothing: test_media_restart)

    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    data = json.loads(raw.execute("SELECT data FROM hooks").fetchone()[0])
    raw.execute("UPDATE hooks SET data=?", (json.dumps({**data, "from_a_newer_version": 1}),))
    raw.commit()
    raw.close()

    again = MediaDb(path)
    assert again.load(m.RecordingRecord) == [rec]
    assert again.load(m.CompositionRecord) == [comp]
    assert again.load(m.HookRecord) == [hook]
    again.forget(m.HookRecord, "HK1")
    assert again.load(m.HookRecord) == []
    again.close()


def test_media_db_unreadable_or_unwritable(tmp_path: Path) -> None:
    """A file that is not a database stops the start with one line naming it; a directory
    that cannot be written costs the records' persistence only (logged), not the media
    service (tested through ``MediaService``: a recording still fails with its reason)."""
    import asyncio

    from mixer_ext.errors import ConfigError
    from mixer_ext.roomserver.compose.workers import CompositionWorkers
    from mixer_ext.roomserver.mediadb import MediaDb
    from mixer_ext.roomserver.recordings import MediaService, RoomRef
    from mixer_ext.roomserver.twilio import media_rest as m

    bad = tmp_path / "media.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"media records .*media\.sqlite3 cannot be read"):
        MediaDb(bad).load(m.HookRecord)

    blocked = tmp_path / "file"
    blocked.write_text("x")  # a file where the directory should be: nothing can be made

    async def scenario() -> None:
        service = MediaService(
            LocalMediaStore(blocked, min_free_bytes=0),
            CompositionWorkers(1),
            account_sid="AC1",
            send=lambda *a: None,
            next_sequence=lambda _sid: 0,
            db=MediaDb(blocked / "media.sqlite3"),
        )
        room = RoomRef("RM1", "r", time.monotonic())
        assert service.start_recording(room, "PA1", "alice", "TR1", "mic") is None
        (record,) = service.recordings.values()
        assert record.status == "failed" and record.error
        await service.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("what", ["garbage", "truncated", "directory"])
def test_room_server_refuses_an_unreadable_media_db(tmp_path: Path, what: str) -> None:
    """``mixer-ext room-server`` (the real CLI, the Twilio front-end on) started against a
    ``media.sqlite3`` it cannot read: exit 2 and one line on stderr naming the file and
    what is wrong; the file and the media beside it are left exactly as they were."""
    import hashlib
    import sqlite3
    import subprocess

    from mixer_ext.testing.net import free_port, mixer_ext_cmd

    media = tmp_path / "media"
    (media / "recordings" / "RM1").mkdir(parents=True)
    (media / "recordings" / "RM1" / "RT1.mka").write_bytes(b"\x1aE\xdf\xa3 kept as is")
    db = media / "media.sqlite3"
    if what == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif what == "truncated":  # a real database cut short (a disk that lost its tail)
        full = tmp_path / "full.sqlite3"
        conn = sqlite3.connect(full)
        conn.execute("CREATE TABLE recordings (sid TEXT PRIMARY KEY, created REAL, data TEXT)")
        conn.executemany(
            "INSERT INTO recordings VALUES (?, 0, ?)", [(f"RT{i}", "x" * 500) for i in range(200)]
        )
        conn.commit()
        conn.close()
        db.write_bytes(full.read_bytes()[:12288])
    else:
        db.mkdir()

    def snapshot() -> dict[str, str]:
        return {
            str(p.relative_to(media)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file()
            else "dir"
            for p in sorted(media.rglob("*"))
        }

    before = snapshot()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")} | {
        "MIXER_ROOM_SECRET": "s" * 40,
        "MIXER_ACCOUNT_SID": "AC" + "0" * 32,
        "MIXER_API_KEYS": "SK" + "0" * 32 + ":api-key-secret",
        "MIXER_RECORDINGS_DIR": str(media),
    }
    proc = subprocess.run(
        [*mixer_ext_cmd(), "room-server", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"the media records {db} cannot be read: " in lines[0], lines[0]
    assert snapshot() == before


async def test_hooks_compose_the_rooms_an_earlier_process_left(tmp_path: Path) -> None:
    """Reconciliation over the media records at start: a room whose recordings completed
    in an earlier process, with no composition by an enabled hook, is composed by it once
    (a second start composes nothing more); a room the hook composed already, a room that
    ended before the hook existed, a disabled hook and a hook made after the room ended
    compose nothing; a composition's leftover ``.part`` is swept.  A unit test of
    ``MediaService``: the runner is a stand-in that returns a result without mixing (the
    mix itself: tests/roomserver/compose); the end-to-end case (a SIGKILLed server, the
    real runner) is tests/e2e/test_recordings.py."""
    import asyncio
    from datetime import timedelta

    from mixer_ext.roomserver.compose.engine import CompositionResult
    from mixer_ext.roomserver.compose.spec import CompositionJob
    from mixer_ext.roomserver.mediadb import MediaDb
    from mixer_ext.roomserver.recordings import MediaService
    from mixer_ext.roomserver.twilio import media_rest as m
    from mixer_ext.roomserver.twilio.rest import now_utc

    ran: list[str] = []

    class Runner:  # a stand-in: records what would run
        async def run(
            self, job: CompositionJob, on_progress: Any = None, on_started: Any = None
        ) -> CompositionResult:
            ran.append(job.output.stem)
            if on_started is not None:
                on_started()
            return CompositionResult(duration=1.0, size=1, channels=1, min_gain=1.0)

        def close(self) -> None:
            pass

    root = tmp_path / "media"
    db = MediaDb(root / "media.sqlite3")
    t0 = now_utc() - timedelta(hours=2)

    def hook(sid: str, created: Any, enabled: bool = True) -> m.HookRecord:
        return m.HookRecord(
            sid=sid, account_sid="AC1", friendly_name=sid, enabled=enabled, audio_sources=["*"],
            audio_sources_excluded=[], trim=True, format="webm", status_callback=None,
            status_callback_method="POST", created=created, updated=created,
        )  # fmt: skip

    def recording(room: str, n: int, created: Any) -> None:
        key = f"recordings/{room}/RT{n}.mka"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"media")
        db.save(
            m.RecordingRecord(
                sid=f"RT{n}", account_sid="AC1", room_sid=room, participant_sid="PA1",
                source_sid=f"TR{n}", track_name=f"t{n}", key=key, status="completed",
                duration=60.0, created=created,
            )
        )  # fmt: skip

    db.save(hook("HKon", t0))
    db.save(hook("HKoff", t0, enabled=False))
    db.save(hook("HKlate", t0 + timedelta(hours=1)))  # made after RMleft and RMdone ended
    recording("RMleft", 1, t0 + timedelta(minutes=1))
    recording("RMleft", 2, t0 + timedelta(minutes=2))
    recording("RMdone", 3, t0 + timedelta(minutes=1))
    recording("RMold", 4, t0 - timedelta(hours=1))  # ended before any hook existed
    done = m.CompositionRecord(
        sid="CJ" + "d" * 32, account_sid="AC1", room_sid="RMdone", audio_sources=["*"],
        audio_sources_excluded=[], trim=True, format="webm", key=f"compositions/CJ{'d' * 32}.webm",
        hook_sid="HKon", status="completed",
    )  # fmt: skip
    db.save(done)
    db.close()
    leftover = root / "compositions" / f".CJ{'e' * 32}.webm.77.part"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half")

    async def start() -> MediaService:
        service = MediaService(
            LocalMediaStore(root, min_free_bytes=0),
            Runner(),
            account_sid="AC1",
            send=lambda *a: None,
            next_sequence=lambda _sid: 0,
            db=MediaDb(root / "media.sqlite3"),
        )
        service.start()
        for _ in range(100):
            if not leftover.exists() and not service._tasks:
                break
            await asyncio.sleep(0.05)
        return service

    service = await start()
    made = [c for c in service.compositions.values() if c.sid != done.sid]
    assert [(c.room_sid, c.hook_sid, c.status) for c in made] == [("RMleft", "HKon", "completed")]
    assert ran == [made[0].sid]
    assert not leftover.exists()
    await service.stop()

    again = await start()  # composed once: nothing more on the next start
    assert len(again.compositions) == 2 and ran == [made[0].sid]
    await again.stop()
