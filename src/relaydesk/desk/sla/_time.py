"""Instants as integer microseconds since the Unix epoch (UTC).

The engine works on ints so that "a reply at exactly the target" compares exactly; floats would
make the inclusive boundary depend on rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import SlaConfigError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
#: Stands for "never" / "open-ended" (year ~146,000); compares greater than any real instant.
INF = 1 << 62
_ONE_US = timedelta(microseconds=1)


def to_us(dt: datetime, what: str = "time") -> int:
    """Convert an aware datetime to epoch microseconds; naive datetimes are rejected."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise SlaConfigError("time.naive", f"{what} must be timezone-aware, got {dt.isoformat()}")
    return (dt - EPOCH) // _ONE_US


def from_us(t: int) -> datetime:
    """Convert epoch microseconds to an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=t)


def seconds_to_us(seconds: float) -> int:
    """Round a duration in seconds to whole microseconds."""
    return round(seconds * US)
