"""A reservation's window as the user writes it: RFC 3339 times of second precision (or
"now"), on the server's UTC clock, not in the past, end after start, and not past the horizon
(IAAS_RESERVATION_HORIZON_DAYS). Stored in utc_now's format, so times compare as strings."""
from __future__ import annotations

import re
from datetime import timedelta

from src import errors
from src.utils.clock import utc_parse, utc_string

# RFC 3339: a date, T (or t, or a space), a time, and Z or an offset; fractions are cut off.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
PAST_GRACE_S = 1  # a start written as "the second that is now" is not in the past


def moment(field: str, value: str, now: str) -> str:
    """The time value names ("now" is now), to the second. Raises: ReservationBadTime."""
    if value == "now":
        return now
    if not _RFC3339.match(value):
        raise errors.ReservationBadTime(field=field, value=value)
    try:
        parsed = utc_parse(value.replace("t", "T").replace("z", "Z").replace(" ", "T"))
    except ValueError:
        raise errors.ReservationBadTime(field=field, value=value) from None
    return utc_string(parsed.replace(microsecond=0))


def window(start: str, end: str, now: str, horizon_days: int) -> tuple[str, str]:
    """(start, end) checked against now. Raises: ReservationBadTime, ReservationInPast,
    ReservationEndBeforeStart, ReservationTooFar."""
    begins, ends = moment("start", start, now), moment("end", end, now)
    current = utc_parse(now)
    if utc_parse(begins) < current - timedelta(seconds=PAST_GRACE_S):
        raise errors.ReservationInPast(start=shown(begins), now=shown(now))
    begins = max(begins, now)
    if ends <= begins:
        raise errors.ReservationEndBeforeStart(start=shown(begins), end=shown(ends))
    latest = current + timedelta(days=horizon_days)
    if utc_parse(ends) > latest:
        raise errors.ReservationTooFar(horizon_days=horizon_days, end=shown(ends),
                                       latest=shown(utc_string(latest)))
    return begins, ends


def shown(stored: str) -> str:
    """A stored time as the API shows a window's: RFC 3339 to the second."""
    return stored[:19] + "Z"


def at(value: str | None, now: str) -> str:
    """The moment an availability question is about (default now). Raises: ReservationBadTime."""
    return now if value is None else max(moment("at", value, now), now)


