"""Recording/composition storage (issue 23.6): keys, disk-space guard, retention, signed URLs."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
