"""The rules of a traversal walked in `updated_since` ranges (connector/ranges.py), range by
range: no HTTP, no threads."""

from __future__ import annotations

import datetime as dt

from connector.timefmt import iso
from connector.traversal.ranges import (
    CLOCK_MARGIN,
    after_page,
    complete,
    pending,
    pick,
    records_left,
    split,
    unpark,
    wrap,
)
from connector.traversal.state import PageFacts, ResourceState, Traversal, accept_page, start

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 1, 11, tzinfo=dt.UTC) + CLOCK_MARGIN  # the open range's span: to day 10


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


def walked(parent: Traversal, *, last_at: dt.datetime, total: int = 1000, upto: int = 100) -> None:
    """The first range took one page ending at `last_at`, with more to come."""
    rng = parent.ranges[0]
    accept_page(
        rng,
        PageFacts(
            next_cursor="c1", total=total, received=100, first_at=T0, last_at=last_at, upto=upto
        ),
    )
    after_page(parent, rng, 100, total)


def test_wrap_turns_the_walk_so_far_into_the_first_range() -> None:
    parent = start("full", None)
    parent.after, parent.pages, parent.skip = "cur", 3, [("a", "x")]
    wrap(parent)
    (first,) = parent.ranges
    assert (first.kind, first.after, first.pages, first.skip) == ("range", "cur", 3, [("a", "x")])
    assert first.since is None and first.until is None
    wrap(parent)  # only once
    assert parent.ranges == [first]


def test_split_cuts_the_open_range_halfway_to_now() -> None:
    parent = start("full", None)
    wrap(parent)
    walked(parent, last_at=at(2))
    first = parent.ranges[0]
    new = split(parent, first, NOW)
    assert new is not None
    assert new.since == iso(at(6)) and new.until is None  # halfway between day 2 and day 10
    assert first.until == iso(at(6))  # the first range now ends where the new one begins
    assert parent.ranges == [first, new] and not new.fresh


def test_split_cuts_a_bounded_range_halfway_to_its_end_and_passes_its_tail_on() -> None:
    parent = start("window", iso(T0), iso(at(8)))
    wrap(parent)
    first = parent.ranges[0]
    first.tail_total = 40  # records past the window's end, from a range that follows it
    walked(parent, last_at=at(4))
    new = split(parent, first, NOW)
    assert new is not None and new.since == iso(at(6)) and new.until == iso(at(8))
    assert (new.tail_total, first.tail_total) == (40, None)


def test_cuts_are_whole_seconds_and_keep_clear_of_the_local_clock() -> None:
    parent = start("full", None)
    wrap(parent)
    walked(parent, last_at=at(2) + dt.timedelta(microseconds=300_001))
    now = at(2) + dt.timedelta(seconds=3) + CLOCK_MARGIN
    new = split(parent, parent.ranges[0], now)
    assert new is not None and new.since == iso(at(2) + dt.timedelta(seconds=1))
    # A range whose records reach within the margin of "now": nothing to cut.
    again = start("full", None)
    wrap(again)
    walked(again, last_at=now - CLOCK_MARGIN / 2)
    assert split(again, again.ranges[0], now) is None


def test_split_never_cuts_a_range_of_zero_width() -> None:
    parent = start("window", iso(T0), iso(at(1)))
    wrap(parent)
    walked(parent, last_at=at(1) - dt.timedelta(milliseconds=1))  # no whole second inside
    assert split(parent, parent.ranges[0], NOW) is None
    assert len(parent.ranges) == 1 and parent.ranges[0].until == iso(at(1))


def test_split_needs_a_started_walk() -> None:
    parent = start("full", None)
    wrap(parent)
    assert split(parent, parent.ranges[0], NOW) is None  # no page yet: nowhere to cut from


def test_records_left_from_counts_then_from_the_next_ranges_total() -> None:
    parent = start("full", None)
    wrap(parent)
    walked(parent, last_at=at(2), total=1000, upto=100)
    first = parent.ranges[0]
    assert records_left(first) == 900  # open range: meta.total less the records up to its page
    new = split(parent, first, NOW)
    assert new is not None
    # Before the new range answers, the density of what was fetched: 100 records in 2 days,
    # 4 days left up to the cut.
    assert records_left(first) == 200
    accept_page(new, PageFacts(next_cursor="n1", total=300, received=100, last_at=at(7), upto=100))
    after_page(parent, new, 100, 300)
    assert first.tail_total == 300  # the next range's meta.total counts what lies past the cut
    assert records_left(first) == 1000 - 300 - 100
    assert records_left(new) == 200
    assert parent.pages == 2 and parent.received == 200


def test_pick_takes_the_busy_range_with_most_left_and_respects_the_floor() -> None:
    parent = start("full", None)
    wrap(parent)
    walked(parent, last_at=at(2), total=1000, upto=100)
    first = parent.ranges[0]
    assert pick(parent, set(), min_pages=8, page_size=100) is None  # not being walked
    assert pick(parent, {first.id}, min_pages=8, page_size=100) is first  # 9 pages left
    assert pick(parent, {first.id}, min_pages=10, page_size=100) is None  # fewer than 10


def test_an_open_last_range_parks_until_the_others_complete() -> None:
    parent = start("incremental", iso(T0))
    wrap(parent)
    walked(parent, last_at=at(2))
    first = parent.ranges[0]
    last = split(parent, first, NOW)
    assert last is not None
    last.after, last.last_after = None, "last-cursor"
    assert complete(parent, last, [("x", "v")]) is None  # the others still walk: it parks
    assert last.parked and last.skip == [("x", "v")] and pending(parent) == [first]
    assert unpark(parent) is None  # not while another range has requests to send
    assert complete(parent, first, []) is None
    assert parent.ranges == [last]
    assert unpark(parent) is last
    assert (last.parked, last.after) == (False, "last-cursor")  # asks once more from there
    assert complete(parent, last, []) is last  # the traversal is complete: it resumes from here
    assert parent.ranges == []


def test_ranges_survive_the_state_round_trip() -> None:
    state = ResourceState()
    parent = state.traversal = start("full", None)
    wrap(parent)
    walked(parent, last_at=at(2))
    new = split(parent, parent.ranges[0], NOW)
    assert new is not None
    new.parked = True
    again = ResourceState.load(state.dump()).traversal
    assert again is not None
    assert [r.to_json() for r in again.ranges] == [r.to_json() for r in parent.ranges]
    assert again.ranges[1].parked and again.ranges[0].until == new.since
    # A traversal never split keeps the state it always had (no range keys at all).
    assert "ranges" not in start("full", None).to_json()
