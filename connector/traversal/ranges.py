"""One traversal walked by several workers: its `updated_since` ranges and how they split.

Pure: no HTTP, no threads, no dlt (the workers live in `range_workers.py`), so every rule
here is tested range by range.

Why ranges: a page slower than the allowance's spacing (120/min: one request every 0.5 s) leaves
allowance unused, and one walk fetches one page at a time. Lists are ordered by
`(updated_at, id)` and filtered by `updated_since` (inclusive) with no upper bound, so a range
`[since, until)` is walked with `updated_since=since` and ends at the first record at or past
`until`, where the next range begins. A block of records sharing one `updated_at` can never be
cut in two: a boundary is an instant, and every record at that instant belongs to the range that
starts there.

Why adaptive splits: nothing says how records are spread over time. When a worker is free, the
range with the most records left is cut at the midpoint of what it has left, in time; the new
range's first page tells (through `meta.total`) how many records lie past the cut, which sharpens
the estimate of the range below it. A split costs at most one request (the split range's page in
flight may reach past the cut: its records there are skipped and fetched again by the new range).
A range of zero width, or with fewer than `2 x max_concurrency` pages left, is never split, so a
no-change sync stays one request per resource.

Why the open last range *parks*: a record updated during the traversal moves to the end of the
list. A sequential walk meets it there; the open last range may have ended before the others, so
it waits (parked) and, once every other range is complete, asks once more from the cursor of its
last page: the same single request a no-change sync spends, and the records it finds are exactly
those a sequential walk would have met.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from connector.timefmt import iso
from connector.traversal.state import Traversal, Version, instant, start

RANGE = "range"
# The open last range is never cut later than this before the local "now": a record updated
# during the traversal gets the *server's* now as its `updated_at` and must land in the open
# range, not behind a bounded one that may be complete already. A clock off by more than this
# is a problem of its own (docs/troubleshooting.md, "Known limits").
CLOCK_MARGIN = dt.timedelta(minutes=15)


def wrap(parent: Traversal) -> None:
    """Walk `parent` in ranges from here on: its walk so far becomes the first range."""
    if parent.ranges:
        return
    first = dataclasses.replace(parent, id=f"{parent.id}-0", kind=RANGE, ranges=[], parked=False)
    first.skip, first.cursors, first.page_ids = (
        list(parent.skip),
        list(parent.cursors),
        list(parent.page_ids),
    )
    parent.ranges = [first]


def records_left(rng: Traversal) -> float | None:
    """Records this range still has to fetch, estimated; None when nothing tells yet.

    From counts when they are known: `meta.total` of the range's own filter, less the records up
    to its last page (from `meta.page`), less those past its end (the next range's total).
    Otherwise from the density of what it fetched so far, spread over the time it has left.
    """
    if rng.last_total is not None and rng.upto is not None:
        if rng.until is None:
            return float(max(0, rng.last_total - rng.upto))
        if rng.tail_total is not None:
            return float(max(0, rng.last_total - rng.tail_total - rng.upto))
    first, at, until = instant(rng.first_at), instant(rng.at), instant(rng.until)
    if first is None or at is None or until is None or at <= first or not rng.received:
        return None
    return rng.received * max(0.0, (until - at) / (at - first))


def walking(rng: Traversal) -> bool:
    """Started, not at its end: a request goes from `after` next."""
    return rng.after is not None and not rng.parked


def pick(parent: Traversal, busy: set[str], *, min_pages: int, page_size: int) -> Traversal | None:
    """The range to split: the busy (being walked) one with the most records left, if it has
    at least `min_pages` pages left."""
    best, most = None, float(min_pages * page_size)
    for rng in parent.ranges:
        if rng.id not in busy or not walking(rng):
            continue
        left = records_left(rng)
        if left is not None and left >= most:
            best, most = rng, left
    return best


def split(parent: Traversal, rng: Traversal, now: dt.datetime) -> Traversal | None:
    """Cut `rng` at the midpoint, in time, of what it has left; the new range follows it.

    The open last range's span ends "now" less `CLOCK_MARGIN` (records updated later land past
    it and are walked by the new, open, range). Cuts are whole seconds. None when the span has
    no such instant strictly inside it.
    """
    at = instant(rng.at)
    if at is None or not walking(rng):
        return None
    upper = instant(rng.until) or now - CLOCK_MARGIN
    if upper <= at:
        return None
    cut = at + (upper - at) / 2
    cut = cut.replace(microsecond=0)  # whole seconds: the reference's own form, for any server
    if not at < cut < upper:
        return None  # zero width: nothing lies strictly between
    new = start(RANGE, iso(cut), rng.until)
    new.fresh = False
    # Versions loaded already (a look-back's window) that lie past the cut are the new range's.
    new.skip = [v for v in rng.skip if (at := _at(v[1])) is not None and at >= cut]
    new.id = f"{parent.id}-{new.id[:6]}"
    new.tail_total = rng.tail_total
    rng.until, rng.tail_total = new.since, None
    parent.ranges.insert(parent.ranges.index(rng) + 1, new)
    return new


def _at(cursor: object) -> dt.datetime | None:
    try:
        return instant(cursor) if isinstance(cursor, str) else None
    except ValueError:  # records.normalize.Invalid: a garbled cursor belongs to no range
        return None


def after_page(parent: Traversal, rng: Traversal, received: int, total: int | None) -> None:
    """A range accepted a page: keep the traversal's own counts, and tell the range before it
    how many records lie past its end (this range's `meta.total`)."""
    parent.pages += 1
    parent.received += received
    if total is not None and rng.since == parent.since:
        parent.last_total = total  # the list as the traversal sees it (a sweep's check)
        if parent.fresh and parent.total is None:
            parent.total = total
    index = parent.ranges.index(rng)
    if index > 0 and parent.ranges[index - 1].until == rng.since:
        parent.ranges[index - 1].tail_total = rng.last_total


def complete(parent: Traversal, rng: Traversal, last_page: list[Version]) -> Traversal | None:
    """`rng` reached its end. Returns the range the traversal resumes from when this was the
    last one (the traversal is then complete), else None.

    The open last range parks while others still walk (see the module docstring).
    """
    others = [r for r in parent.ranges if r is not rng]
    if rng.until is None and others:
        rng.parked, rng.skip = True, list(last_page)
        return None
    parent.ranges = others
    return None if others else rng


def unpark(parent: Traversal) -> Traversal | None:
    """Every other range is complete: the parked open range asks once more from the cursor
    of its last page (its versions there are skipped)."""
    if len(parent.ranges) != 1 or not parent.ranges[0].parked:
        return None
    rng = parent.ranges[0]
    rng.parked, rng.after = False, rng.last_after
    return rng


def pending(parent: Traversal) -> list[Traversal]:
    """Ranges with requests to send, in list order (a range not yet started included)."""
    return [r for r in parent.ranges if not r.parked]


__all__ = [
    "CLOCK_MARGIN",
    "RANGE",
    "after_page",
    "complete",
    "pending",
    "pick",
    "records_left",
    "split",
    "unpark",
    "walking",
    "wrap",
]
