"""Timestamps: ISO 8601 UTC strings, the only time format stored or returned."""
from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """Now as ISO 8601 UTC with microseconds, e.g. 2026-11-28T07:51:02.123456Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
