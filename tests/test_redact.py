"""Stream keys and tokens never reach a log line."""

from __future__ import annotations

import logging

import pytest

from mixer_ext.log import RedactingFilter, TextFormatter
from mixer_ext.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtmp://a.example/live/sk_live_123", "rtmp://a.example/live/***"),
        ("rtmps://a.example:443/app/KEY?token=abc", "rtmps://a.example:443/app/***?***"),
        ("rtmp://user:pw@h/app/k", "rtmp://***@h/app/***"),
        ("rtmp://h/ONLYKEY", "rtmp://h/***"),
        ("https://cb.example/hook?token=zzz&x=1", "https://cb.example/hook?token=***&x=1"),
        ("http://h/path", "http://h/path"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_urls_and_jwts() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlX19f"
    text = f"connect to rtmp://h/app/SECRET failed; token {jwt} room_secret=abc"
    out = redact_text(text)
    assert "SECRET" not in out.replace("room_secret", "")
    assert jwt not in out
    assert "abc" not in out


def test_logging_filter_redacts_args_fields_and_tracebacks() -> None:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "to %s", ("rtmp://h/a/KEY1",), None)
    record.fields = {"url": "rtmp://h/a/KEY2"}
    try:
        raise RuntimeError("rtmp://h/a/KEY3")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    line = TextFormatter().format(record)
    for key in ("KEY1", "KEY2", "KEY3"):
        assert key not in line
