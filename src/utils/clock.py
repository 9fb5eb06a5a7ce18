"""Timestamps: ISO 8601 UTC strings, the only time format stored or returned."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    """Now as ISO 8601 UTC with microseconds, e.g. 2026-11-28T07:51:02.123456Z."""
    return datetime.now(UTC).strftime(_FORMAT)


def utc_after(seconds: float) -> str:
    """The time seconds from now, in utc_now's format (so the strings compare as times)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime(_FORMAT)
