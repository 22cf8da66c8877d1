"""Incremental, resumable traversals against the real sandbox, run in-process (fast).

Each test drives `run_sync` the way `ciklek sync` does, with 20-record pages and 3-page chunks,
and compares the warehouse with what the API serves at the end. The sandbox holds 300 orders,
the fewest for which it generates a block of equal `updated_at` (150 records) larger than a page.
Tests whose point is not where a chunk ends commit each sync in one chunk (`one_chunk`): a chunk
is a dlt load, the cost of a sync, and the traversals themselves are unchanged.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from connector.cli.tables import summary
from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.runs.sync import run_sync
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    PAGE,
    api_records,
    assert_orders_match_api,
    fast_env,
    instant,
    set_env,
)

ORDERS = 300  # with 300 or more orders the sandbox generates a block of 150 equal updated_at
FLAGS = ("--orders", ORDERS, "--customers", 30, "--products", 20, "--window-limit", 1_000_000)
ORDER_PAGES = ORDERS // PAGE  # 15


@pytest.fixture
def sb(sandbox_factory, monkeypatch: pytest.MonkeyPatch) -> SandboxProcess:
    sandbox: SandboxProcess = sandbox_factory(*FLAGS)
    # One page at a time: these tests pin the request count of a sequential walk (ranges have
    # their own resume tests in tests/e2e/test_ranges.py).
    set_env(monkeypatch, fast_env(sandbox, SOURCES__CIKLEK__MAX_CONCURRENCY="1"))
    return sandbox


def one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sync commits in one chunk: for tests whose point is not where chunks end."""
    monkeypatch.setenv("SOURCES__CIKLEK__CHECKPOINT_PAGES", "100")


def sync(**options: object) -> SyncResult:
    opts = {"resources": ["orders"], "progress": False, **options}
    return run_sync(SyncOptions(**opts))  # type: ignore[arg-type]


W = instant("2026-12-01T07:00:00Z")


@pytest.mark.parametrize("lookback", [None, "0"], ids=["look-back", "cursor"])
def test_block_larger_than_a_page_and_non_utc_watermark(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch, lookback: str | None
) -> None:
    if lookback is not None:
        monkeypatch.setenv("SOURCES__CIKLEK__LOOKBACK_SECONDS", lookback)
    db = clean_env / DEFAULT_DB
    blocks = collections.Counter(instant(r["updated_at"]) for r in api_records(sb).values())
    assert max(blocks.values()) > PAGE  # the generated data holds a block bigger than a page

    first = sync()
    assert first.exit_code == 0
    assert first.log.requests == ORDER_PAGES
    assert first.report.outcome("orders").chunks >= ORDER_PAGES // 3
    assert_orders_match_api(db, sb)

    # The newest block: 30 records (1.5 pages) at one instant written with a -08:00 offset,
    # and one earlier instant whose text sorts *after* it ("2026-12-01T10" > "2026-11-30T23").
    ids = sorted(api_records(sb))
    block = ids[:30]
    for rid in block:
        sb.control_request(
            "PATCH",
            f"records/orders/{rid}",
            json={"updated_at": "2026-11-30T23:00:00-08:00", "status": "shipped"},
        )
    sb.control_request(
        "PATCH",
        f"records/orders/{ids[-1]}",
        json={"updated_at": "2026-12-01T10:00:00+05:30", "status": "cancelled"},
    )

    second = sync()
    assert second.exit_code == 0
    assert_orders_match_api(db, sb)
    # Compared as instants: 23:00-08:00 is 07:00Z, later than 10:00+05:30 = 04:30Z.
    assert instant(second.watermarks["orders"]) == W
    assert query(
        db,
        "select count(*) from ciklek.orders "
        "where status = 'shipped' and updated_at = '2026-12-01 07:00:00+00'",
    ) == [(30,)]

    # Nothing new. With lookback_seconds = 0 the sync continues from the cursor that fetched
    # the last page: one request, although the newest block (30) is larger than a page (20).
    # With the look-back (900 s by default) it re-reads the 15 minutes before the watermark
    # (07:00Z, from its -08:00 text as an instant): the block, two pages, none of it loaded.
    third = sync()
    assert third.exit_code == 0
    assert third.log.requests == (1 if lookback == "0" else 2)
    assert third.report.outcome("orders").rows == 0
    assert instant(third.watermarks["orders"]) == W

    # One record of that block changes: it is picked up, nothing is duplicated.
    sb.control_request("PATCH", f"records/orders/{block[0]}", json={"status": "delivered"})
    fourth = sync()
    assert fourth.report.outcome("orders").rows == 1
    assert_orders_match_api(db, sb)
    assert instant(fourth.watermarks["orders"]) > W


def test_record_updated_mid_traversal_is_loaded_once_and_reported(
    sb: SandboxProcess, clean_env: Path
) -> None:
    db = clean_env / DEFAULT_DB
    stopped = sync(max_requests=7)  # 7 of 15 pages, then a clean stop
    assert stopped.exit_code == 75
    loaded = [r[0] for r in query(db, "select id from ciklek.orders")]
    assert len(loaded) == 7 * PAGE
    everything = set(api_records(sb))
    not_yet = sorted(everything - set(loaded))
    # One record already loaded and one not yet reached change while the traversal is paused.
    sb.control_request("PATCH", f"records/orders/{loaded[0]}", json={"status": "cancelled"})
    sb.control_request("PATCH", f"records/orders/{not_yet[0]}", json={"status": "cancelled"})

    resumed = sync()
    assert resumed.exit_code == 0
    assert resumed.log.requests < ORDER_PAGES  # resumed at page 8, not page 1
    assert_orders_match_api(db, sb)
    rec = resumed.report.outcome("orders").reconciliation
    assert rec is not None
    assert (rec.expected, rec.distinct, rec.reappeared) == (300, 300, 1)
    text = summary(resumed)
    assert "reconciliation orders: 300 distinct of 300 expected, 1 reappeared" in text


def test_since_until_window_leaves_the_watermark_untouched(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_chunk(monkeypatch)
    db = clean_env / DEFAULT_DB
    since, until = instant("2025-06-01T00:00:00Z"), instant("2025-09-01T00:00:00Z")
    records = api_records(sb)
    inside = {rid for rid, r in records.items() if since <= instant(r["updated_at"]) < until}
    from_since = sum(1 for r in records.values() if instant(r["updated_at"]) >= since)
    assert PAGE < len(inside) < from_since - PAGE

    window = sync(since="2025-06-01", until="2025-09-01")  # bare dates: 00:00 UTC
    assert window.exit_code == 0
    assert {r[0] for r in query(db, "select id from ciklek.orders")} == inside
    assert window.watermarks["orders"] is None
    # The traversal stopped itself at --until: the page holding the first record past it.
    assert window.log.requests == len(inside) // PAGE + 1

    regular = sync()
    assert regular.exit_code == 0
    watermark = regular.watermarks["orders"]
    assert watermark is not None
    assert_orders_match_api(db, sb)

    # A window over data already loaded: same rows, watermark and resume cursor untouched.
    again = sync(since="2025-06-01T02:00:00+02:00", until="2025-09-01")
    assert again.exit_code == 0
    assert again.watermarks["orders"] == watermark
    assert_orders_match_api(db, sb)
    after = sync()
    assert after.log.requests == 1
    assert after.watermarks["orders"] == watermark


def test_rejected_stored_cursor_restarts_from_updated_since(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_chunk(monkeypatch)
    # A finished traversal's cursor is followed only without a look-back: each sync with one
    # starts from updated_since (below: a rotated secret then costs nothing).
    monkeypatch.setenv("SOURCES__CIKLEK__LOOKBACK_SECONDS", "0")
    db = clean_env / DEFAULT_DB
    assert sync().exit_code == 0
    watermark = sync().watermarks["orders"]
    sb.control_post("rotate_cursor_secret")  # every cursor issued so far now answers 400

    rejected = sync()
    assert rejected.exit_code == 0
    assert rejected.log.for_endpoint("/orders").by_status["400"] == 1
    assert any("stored cursor rejected" in n for n in rejected.report.outcome("orders").notes)
    assert rejected.log.requests == 2  # the 400, then one page from updated_since=watermark
    assert rejected.watermarks["orders"] == watermark
    assert_orders_match_api(db, sb)
    assert sync().log.requests == 1  # the fresh cursor was stored: cheap again

    monkeypatch.delenv("SOURCES__CIKLEK__LOOKBACK_SECONDS")  # the default look-back
    sb.control_post("rotate_cursor_secret")
    looked_back = sync()
    assert looked_back.log.requests == 1  # no stored cursor sent: no 400
    assert looked_back.log.for_endpoint("/orders").by_status["400"] == 0
    assert_orders_match_api(db, sb)


def test_rejected_cursor_of_a_traversal_in_progress_restarts_it(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_chunk(monkeypatch)
    db = clean_env / DEFAULT_DB
    assert sync(max_requests=5).exit_code == 75
    sb.control_post("rotate_cursor_secret")
    resumed = sync()
    assert resumed.exit_code == 0
    assert resumed.log.requests == 1 + ORDER_PAGES  # the 400, then the whole traversal again
    assert_orders_match_api(db, sb)
    assert sync().log.requests == 1


def test_lookback_picks_up_a_late_update_without_duplicates(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_chunk(monkeypatch)
    db = clean_env / DEFAULT_DB
    watermark = instant(sync().watermarks["orders"])
    assert watermark is not None
    # A change that reaches the API with an updated_at already behind our watermark, earlier
    # than the last two pages (the stored resume cursor would otherwise see it anyway).
    ordered = sorted(api_records(sb).values(), key=lambda r: (instant(r["updated_at"]), r["id"]))
    late_at = instant(ordered[-3 * PAGE]["updated_at"])
    late = next(r["id"] for r in ordered if r["status"] != "cancelled")  # not cancelled yet
    sb.control_request(
        "PATCH",
        f"records/orders/{late}",
        json={"status": "cancelled", "updated_at": late_at.isoformat()},
    )

    # Days behind the watermark: farther than the default look-back (900 s) reaches.
    assert (watermark - late_at).total_seconds() > 900
    missed = sync()
    assert missed.report.outcome("orders").rows == 0
    assert query(db, f"select status from ciklek.orders where id = '{late}'") != [("cancelled",)]

    lookback = (watermark - late_at).total_seconds() + 60
    monkeypatch.setenv("SOURCES__CIKLEK__LOOKBACK_SECONDS", str(lookback))
    caught = sync()
    assert caught.exit_code == 0
    assert_orders_match_api(db, sb)
    assert instant(caught.watermarks["orders"]) == watermark
