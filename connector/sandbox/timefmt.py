"""Timestamps as the sandbox sees them: integer microseconds since the epoch.

Records are sorted and compared by instant, never by string, because the API renders one
instant with many offsets and precisions. Keeping instants as ``int`` microseconds makes the
sort key exact and cheap; rendering and parsing live here so every module agrees on both.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND

_TZ_CACHE: dict[int, timezone] = {}


def _tz(offset_minutes: int) -> timezone:
    tz = _TZ_CACHE.get(offset_minutes)
    if tz is None:
        tz = UTC if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
        _TZ_CACHE[offset_minutes] = tz
    return tz


def to_datetime(us: int, offset_minutes: int = 0) -> datetime:
    """The aware datetime for an instant, shown in the given UTC offset."""
    return (_EPOCH + timedelta(microseconds=us)).astimezone(_tz(offset_minutes))


def format_ts(us: int, offset_minutes: int = 0, digits: int = 0, zulu: bool = True) -> str:
    """Render an instant as ISO 8601 without losing it.

    ``digits`` (0, 3 or 6) is the wanted fractional precision; it is raised when the instant
    needs more, so a rendered string always parses back to exactly ``us``. UTC renders as ``Z``
    when ``zulu`` is true, else as ``+00:00`` (the real API is not consistent either).
    """
    sub = us % US_PER_SECOND
    if digits < 6 and sub % (10 ** (6 - digits)) != 0:
        digits = 3 if sub % 1000 == 0 else 6
    t = time.gmtime(us // US_PER_SECOND + offset_minutes * 60)
    text = (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )
    if digits:
        text += "." + f"{sub:06d}"[:digits]
    if offset_minutes == 0 and zulu:
        return text + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def format_date(us: int) -> str:
    """The UTC calendar date of an instant, as ``YYYY-MM-DD``."""
    return to_datetime(us).date().isoformat()


def parse_ts(text: str) -> int | None:
    """Parse an ISO 8601 timestamp (any offset, any fraction, ``Z``) to microseconds.

    A bare ``YYYY-MM-DD`` means 00:00 UTC, and so does any value without an offset: the API
    documents UTC. Returns ``None`` for anything unparseable so callers answer 400.
    """
    if not text or len(text) > 64 or " " in text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def parse_date(text: str) -> date | None:
    """Parse a strict ``YYYY-MM-DD`` calendar date, ``None`` when it is not one."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


class SandboxClock:
    """Real time plus an offset that the control API can advance.

    Tests move the clock forward to expire rate windows, idempotency keys and daily quotas
    without sleeping; everything time-dependent in the sandbox reads this clock.
    """

    def __init__(self, offset_us: int = 0) -> None:
        self.offset_us = offset_us

    def now_us(self) -> int:
        return time.time_ns() // 1000 + self.offset_us

    def now(self) -> float:
        return self.now_us() / US_PER_SECOND

    def advance(self, seconds: float) -> None:
        self.offset_us += round(seconds * US_PER_SECOND)
