"""Keep secrets out of logs, errors, status reports and metrics.

An RTMP URL's stream key is its last path segment plus any query string
(``rtmp://host/app/KEY?token=...``).  Everything that prints a URL or a
free-form message from a library passes through ``redact_url`` /
``redact_text``; a logging filter (``mixer_ext.log``) applies the latter to
every record as a safety net.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

_URL_IN_TEXT = re.compile(r"\b(rtmps?|rtmpt|rtmpe|srt|wss?|https?)://[^\s'\"<>]+", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"(?i)\b([\w.-]*(?:token|secret|key|password|passwd|signature|sig|auth)[\w.-]*)"
    r"=([^&\s'\"]+)"
)
#: literal secrets (RTMP stream keys) to scrub wherever they appear, even bare
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
#: shorter strings would scrub ordinary words
MIN_SECRET_LENGTH = 4

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")


def redact_url(url: str) -> str:
    """Redact credentials, and for RTMP the stream key, from one URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    path = parts.path
    query = parts.query
    if parts.scheme.lower().startswith("rtmp"):
        segs = path.split("/")
        # "/app/KEY" -> ["", "app", "KEY"]: hide the last non-empty segment, which is the
        # key in a well-formed URL and may be one in a malformed "rtmp://host/KEY".
        for i in range(len(segs) - 1, -1, -1):
            if segs[i]:
                segs[i] = REDACTED
                break
        path = "/".join(segs)
        query = REDACTED if query else ""
    elif query:
        query = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", query)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def add_secret(secret: str) -> None:
    """Scrub ``secret`` from every later ``redact_text`` result, even outside a URL.

    Used for RTMP stream keys: libraries (FFmpeg's RTMP client, a server's
    error string) may print the key alone, where no URL pattern finds it.
    Secrets shorter than ``MIN_SECRET_LENGTH`` are ignored.
    """
    if len(secret) >= MIN_SECRET_LENGTH:
        with _SECRETS_LOCK:
            _SECRETS.add(secret)


def redact_text(text: str) -> str:
    """Redact every URL, ``token=`` style parameter, JWT and registered secret in free text."""
    if _SECRETS:
        with _SECRETS_LOCK:
            secrets = sorted(_SECRETS, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _JWT.sub(REDACTED, text)
