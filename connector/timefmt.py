"""The one timestamp format: ISO 8601 in UTC with `Z`, fractions only when there are any.

Why one: instants go to the API (`updated_since`), into dlt state, status files, run rows, JSON
log lines and the summary; a value written in one place is read back and compared in another,
and people grep for them. `2026-03-15T09:00:00Z` is the reference's own form, so a strict
server accepts what we send.
"""

from __future__ import annotations

import datetime as dt


def iso(instant: dt.datetime) -> str:
    """`instant` in UTC: `2026-03-15T09:00:00Z`, or `...:00.250000Z` when it has microseconds.

    A naive datetime is taken as UTC (everything the connector stores is).
    """
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    utc = instant.astimezone(dt.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def stamp(value: dt.datetime | str | None) -> str:
    """`iso()` for what the product prints: None is `-`, and a string (read back from a status
    file) is parsed and written again, so old values print like fresh ones."""
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return iso(value)
    try:
        return iso(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return value


def now() -> str:
    """This instant, as `iso()` writes it."""
    return iso(dt.datetime.now(dt.UTC))
