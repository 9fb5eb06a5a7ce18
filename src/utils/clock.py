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


def utc_string(moment: datetime) -> str:
    """A datetime as utc_now writes it."""
    return moment.astimezone(UTC).strftime(_FORMAT)


def utc_parse(value: str) -> datetime:
    """A time utc_now wrote (or any ISO 8601 time with its offset) as an aware datetime.

    Raises: ValueError.
    """
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment.astimezone(UTC)


def seconds_between(start: str, end: str) -> float:
    return (utc_parse(end) - utc_parse(start)).total_seconds()


def utc_plus(value: str, seconds: float) -> str:
    return utc_string(utc_parse(value) + timedelta(seconds=seconds))
