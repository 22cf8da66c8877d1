"""The sweep as a traversal kind (its own state slot), its bookkeeping in dlt state, its
budget (run cap and reserve) and its guard, without HTTP or a warehouse."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from connector.api.ledger import SweepQuota
from connector.errors import BudgetSpent
from connector.traversal.state import (
    PageFacts,
    ResourceState,
    ResumePoint,
    accept_page,
    begin,
    finish,
    restart,
)
from connector.traversal.sweep_state import SweepRecord, on_chunk
from connector.warehouse.deletes import Verdict

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def test_a_sweep_has_its_own_slot_beside_the_incremental_traversal() -> None:
    state = ResourceState(watermark="2026-11-01T00:00:00Z", rows_loaded=10)
    state.resume = ResumePoint("2026-11-01T00:00:00Z", "cur-9", [("a", "2026-11-01T00:00:00Z")])
    sync_trav = begin(state, window=None, lookback_seconds=0, full_refresh=False)
    sweep = begin(state, window=None, lookback_seconds=0, full_refresh=False, sweep=True)
    assert sweep is not sync_trav and state.traversal is sync_trav and state.sweep is sweep
    assert (sweep.kind, sweep.since, sweep.after, sweep.skip) == ("sweep", None, None, [])
    assert sync_trav.after == "cur-9"  # the sync resumes as before: the sweep changed nothing
    # The same sweep is continued by the next run, from the stored state.
    assert accept_page(sweep, PageFacts(next_cursor="s1", total=50)) is False
    again = ResourceState.load(state.dump())
    assert again.sweep is not None and again.sweep.id == sweep.id and again.sweep.after == "s1"
    continued = begin(again, window=None, lookback_seconds=0, full_refresh=False, sweep=True)
    assert continued.after == "s1" and again.traversal is not None
    assert again.traversal.after == "cur-9"


def test_a_finished_sweep_moves_no_watermark_and_a_rejected_cursor_restarts_from_the_top() -> None:
    state = ResourceState(watermark="2026-11-01T00:00:00Z", rows_loaded=10)
    sweep = begin(state, window=None, lookback_seconds=60, full_refresh=False, sweep=True)
    accept_page(sweep, PageFacts(next_cursor="s1", total=50))
    assert restart(state, sweep, 60) is True
    assert sweep.since is None and sweep.after is None  # never an updated_since
    assert accept_page(sweep, PageFacts(next_cursor=None, total=48)) is True
    assert sweep.last_total == 48  # the last page's meta.total, not the first one's
    finish(state, sweep, [])
    assert state.sweep is None
    assert state.watermark == "2026-11-01T00:00:00Z" and state.resume is None


def test_sweep_record_keeps_threshold_quarantined_ids_and_a_completed_sweep_as_pending() -> None:
    state = ResourceState()
    trav = begin(state, window=None, lookback_seconds=0, full_refresh=False, sweep=True)
    first, later = "1764000000.000001", "1764000100.000002"  # two chunks' load ids
    on_chunk(state, trav, [{"record_id": "bad1"}, {"record_id": None}], False, first)
    record = SweepRecord.load(state.sweeps)
    assert record.current is not None and record.current["quarantined"] == ["bad1"]
    assert record.current["unkeyed"] == 1 and record.current["id"] == trav.id
    assert record.current["threshold"] == first
    trav.last_total, trav.received = 40, 41
    finish(state, trav, [])  # as the source does when the last page came
    on_chunk(state, trav, [{"record_id": "bad1"}, {"record_id": "bad2"}], True, later)
    record = SweepRecord.load(ResourceState.load(state.dump()).sweeps)
    assert record.current is None and record.pending is not None
    assert record.pending["threshold"] == first  # the first chunk's load id, kept
    assert record.pending["quarantined"] == ["bad1", "bad2"]
    assert record.pending["last_total"] == 40 and record.pending["completed_at"]
    # A new sweep replaces a pending result nobody applied.
    nxt = begin(state, window=None, lookback_seconds=0, full_refresh=False, sweep=True)
    assert nxt.id != trav.id
    on_chunk(state, nxt, [], False, later)
    record = SweepRecord.load(state.sweeps)
    assert record.pending is None and record.current is not None and record.current["id"] == nxt.id
    assert record.current["threshold"] == later


def quota(tmp_path: Path, *, budget: int = 100, reserve: int = 20, cap: int = 50) -> SweepQuota:
    return SweepQuota(
        tmp_path / "ledger.json", "k", "p", daily_budget=budget, reserve=reserve, run_cap=cap,
        now=lambda: NOW,
    )  # fmt: skip


def test_a_sweep_run_stops_at_its_cap(tmp_path: Path) -> None:
    led = quota(tmp_path, cap=5)
    for _ in range(5):
        led.charge()
    with pytest.raises(BudgetSpent, match="sweep_run_requests 5 reached") as stop:
        led.charge()
    assert stop.value.resume_at is None  # run again at once: the next run continues


def test_a_sweep_leaves_the_reserve_to_syncs(tmp_path: Path) -> None:
    led = quota(tmp_path, budget=100, reserve=30, cap=1000)
    for _ in range(70):
        led.charge()
    with pytest.raises(BudgetSpent, match="sweep_reserve") as stop:
        led.charge()
    assert stop.value.resume_at == dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    assert led.left_today == 30


def test_the_guard_refuses_a_list_that_left_records_out_or_too_many_deletes() -> None:
    assert Verdict(live=100, unseen=10, seen=90, expected=90).refusal(0.10) is None
    share = Verdict(live=100, unseen=11, seen=89, expected=89).refusal(0.10)
    assert share is not None and "11% of its 100 live rows" in share
    missing = Verdict(live=100, unseen=2, seen=50, expected=98).refusal(0.10)
    assert missing is not None and "saw 50 distinct records" in missing and "98" in missing
    assert Verdict(live=0, unseen=0, seen=0, expected=0).refusal(0.10) is None
