"""Where recordings and compositions live: one small interface, a local directory behind it.

Media files are named by a **key** (``recordings/RM…/RT….mka``, ``compositions/CJ….mp4``),
never by a path a client chose.  ``MediaStore`` is what the recorder, the composer and the
REST resources use; ``LocalMediaStore`` keeps the files under ``MIXER_RECORDINGS_DIR``.  An
object store can follow behind the same calls: a writer gets a local path to write
(``writable``), hands the finished file over (``commit``), a reader gets a local path
(``readable``: a local store's own file, an object store's cached copy); ``keys`` lists
what is stored (a restarted server adopts the recordings it finds).

Guards: ``ensure_space()`` refuses (``StorageFull``, naming the setting) a new file when
the disk has less than ``MIXER_RECORDINGS_MIN_FREE_MB`` free; ``expire(now)`` deletes media
older than ``MIXER_RECORDINGS_RETENTION_DAYS`` (the REST resources keep their metadata).

``MediaUrlSigner`` makes the temporary URLs a ``…/Media`` request redirects to: the key and
an expiry signed with HMAC-SHA256 under a server secret; a URL whose expiry passed, or
whose key or expiry was changed, is refused.

``discard_partial`` deletes what a killed composition writer left under a temporary name
(a room server start does it; recordings have none: they are written in place, live
Matroska, and decode up to their last second after a SIGKILL).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import time
from pathlib import Path
from typing import Protocol

#: what a key may look like: a few safe path segments, no "..", no absolute path
_KEY = re.compile(r"^(recordings|compositions)(/[A-Za-z0-9_-]+)+\.[a-z0-9]{2,4}$")


#: a composition's temporary file: ``.CJ….{mp4,webm,json}.<pid>.part``, ``.CJ….job.json``,
#: ``.CJ….status.json`` (and its ``.<pid>.tmp``); group 1 is the composition's SID
_TEMPORARY = re.compile(
    r"^\.(CJ[0-9a-f]{32})[^/]*(\.part|\.job\.json|\.status\.json|\.status\.json\.\d+\.tmp)$"
)


class StorageFull(RuntimeError):
    """Not enough free space for a new recording or composition."""


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a media key: {key!r}")
    return key


class MediaStore(Protocol):
    """The storage of media files by key (see the module docstring)."""

    def writable(self, key: str) -> Path: ...

    def commit(self, key: str) -> None: ...

    def readable(self, key: str) -> Path | None: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...

    def ensure_space(self) -> None: ...

    def expire(self, now: float | None = None) -> list[str]: ...

    def discard_partial(self, keep: set[str]) -> list[str]: ...


class LocalMediaStore:
    """``MediaStore`` on a local directory (``MIXER_RECORDINGS_DIR``)."""

    def __init__(
        self, root: Path, *, min_free_bytes: int = 512 << 20, retention_seconds: float = 0.0
    ) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.retention_seconds = retention_seconds

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def writable(self, key: str) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, key: str) -> None:
        """The file at ``writable(key)`` is complete (a local store has nothing to do)."""

    def readable(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def size(self, key: str) -> int:
        path = self.readable(key)
        return path.stat().st_size if path is not None else 0

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        """Every media key under ``prefix`` (``recordings`` or ``compositions``), sorted."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        found = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in found if _KEY.match(k))

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def ensure_space(self) -> None:
        free = self.free_bytes()
        if free < self.min_free_bytes:
            raise StorageFull(
                f"{self.root}: {free >> 20} MiB free, below MIXER_RECORDINGS_MIN_FREE_MB="
                f"{self.min_free_bytes >> 20}"
            )

    def expire(self, now: float | None = None) -> list[str]:
        """Delete media files older than the retention; returns their keys."""
        if self.retention_seconds <= 0 or not self.root.is_dir():
            return []
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        gone: list[str] = []
        for kind in ("recordings", "compositions"):
            base = self.root / kind
            if not base.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    path = Path(dirpath) / name
                    key = path.relative_to(self.root).as_posix()
                    if _KEY.match(key) and path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                        gone.append(key)
        return sorted(gone)

    def discard_partial(self, keep: set[str]) -> list[str]:
        """Delete the temporary files of compositions (``compositions/.CJ….part``, the
        Kubernetes runner's ``.CJ….job.json``/``.status.json`` and their ``.tmp``) except
        those of the SIDs in ``keep``; returns the names deleted."""
        base = self.root / "compositions"
        if not base.is_dir():
            return []
        gone: list[str] = []
        for path in sorted(base.iterdir()):
            name = path.name
            match = _TEMPORARY.match(name)
            if match is None or match.group(1) in keep or not path.is_file():
                continue
            path.unlink(missing_ok=True)
            gone.append(name)
        return gone


class MediaUrlSigner:
    """Signed, expiring media URLs (``?Expires=…&Signature=…``) for ``…/Media`` redirects."""

    def __init__(self, secret: bytes, *, ttl: float = 600.0) -> None:
        if len(secret) < 16:
            raise ValueError("the media URL secret must be at least 16 bytes")
        self._secret = secret
        self.ttl = ttl

    def _mac(self, key: str, expires: int) -> str:
        msg = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, key: str, now: float | None = None) -> tuple[int, str]:
        """``(expires, signature)`` for ``key``, valid ``ttl`` seconds from ``now``."""
        expires = int((time.time() if now is None else now) + self.ttl)
        return expires, self._mac(check_key(key), expires)

    def verify(self, key: str, expires: str, signature: str, now: float | None = None) -> str:
        """``""`` when valid, else why not (one line, for the 403 answer)."""
        try:
            check_key(key)
            when = int(expires)
        except ValueError:
            return "malformed media URL"
        if not hmac.compare_digest(self._mac(key, when), signature):
            return "bad signature"
        if when < (time.time() if now is None else now):
            return "the media URL has expired"
        return ""
