"""The run's requests recorded ahead in the warehouse (connector/runs/request_ledger.py) and the
count a fresh runner rebuilds from them (connector/warehouse/run_log.py).

The walk is the real page loop against a fake API (`httpx.MockTransport`) with a real quota
ledger in a temporary state dir: a chunk stops at what its committed load allowed, and goes on
once the next load records more.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx

from connector.api.client import CiklekClient
from connector.api.ledger import QuotaLedger, used_on
from connector.catalogue import CATALOGUE
from connector.config.redaction import ApiKey
from connector.runs.request_ledger import WarehouseLedger, chunk_allowance
from connector.traversal.page_loop import Chunk, walk
from connector.traversal.run_config import RunConfig
from connector.traversal.run_report import RunReport
from connector.traversal.state import ResourceState, start
from connector.warehouse.run_log import RunRecord, requests_on

TODAY = dt.datetime.now(dt.UTC).date()


def _api(pages: int, seen: list[str]) -> httpx.MockTransport:
    """`pages` pages of one order each, cursors p1, p2, ..."""

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after") or "p0"
        n = int(after[1:]) + 1
        seen.append(after)
        record = {"id": f"o{n}", "updated_at": f"2026-01-01T00:00:{n:02d}Z", "line_items": []}
        cursor = f"p{n}" if n < pages else None
        return httpx.Response(200, json={"data": [record], "meta": {"next_cursor": cursor}})

    return httpx.MockTransport(handler)


def test_a_walk_stops_at_the_allowance_its_last_load_recorded(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    quota = QuotaLedger(state_dir / "ledger.json", "k", "p", daily_budget=100)
    ledger = WarehouseLedger("run1", "p", quota, allowance=3)
    seen: list[str] = []
    client = CiklekClient(
        "https://api.test/v1", ApiKey("bsk_test_x"), transport=_api(10, seen), quota=quota
    )
    spec, report = CATALOGUE["orders"], RunReport()
    trav = start("full", None)
    chunk = Chunk(spec, ResourceState(), trav, RunConfig(page_size=1))

    report.start_chunk(1, 1)
    assert walk(chunk, client, report) is False  # nothing recorded yet: not one request
    assert seen == [] and quota.run_requests == 0
    first = ledger.next_row()  # the small load before the first request
    assert (first["reserved"], first["used"], first["closed"]) == (3, 0, False)
    ledger.committed()

    report.start_chunk(1, 1)
    assert walk(chunk, client, report) is False  # three pages, then the chunk ends
    out = report.outcome("orders")
    assert (quota.run_requests, out.pages, out.stop, out.error) == (3, 3, None, None)
    assert used_on(state_dir / "ledger.json", "k", TODAY.isoformat()) == {"p": 3}
    row = ledger.next_row()  # the chunk's load records the next allowance
    assert (row["reserved"], row["used"]) == (6, 3)
    ledger.committed()

    report.start_chunk(1, 1)
    assert walk(chunk, client, report) is False
    assert seen == ["p0", "p1", "p2", "p3", "p4", "p5"]  # where the last chunk stopped
    closing = ledger.closing_row()
    assert (closing["reserved"], closing["used"], closing["closed"]) == (6, 6, True)


def test_the_allowance_stays_within_the_budget_and_is_at_least_one(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    quota = QuotaLedger(state_dir / "ledger.json", "k", "p", daily_budget=5, max_requests=4)
    ledger = WarehouseLedger("run1", "p", quota, allowance=chunk_allowance(100))
    assert ledger.allowance == 150  # a chunk's pages and half again for retries and splits
    assert ledger.next_row()["reserved"] == 4  # --max-requests 4 leaves no more to record
    ledger.committed()
    for _ in range(4):
        quota.charge()
    assert ledger.next_row()["reserved"] == 5  # nothing left: one, so the next request stops


def test_the_rebuilt_count_takes_the_ledger_and_old_runs_once() -> None:
    today = dt.datetime.combine(TODAY, dt.time(1), tzinfo=dt.UTC)
    runs = [
        RunRecord(today, "completed", ("orders",), 7, run_id="a"),  # closed: its ledger says 7
        RunRecord(today, "completed", ("orders",), 4, run_id="old"),  # before the ledger table
        RunRecord(today - dt.timedelta(days=1), "completed", ("orders",), 9, run_id="y"),
    ]
    ledger = [
        ("a", TODAY, 7),
        ("killed", TODAY, 13),  # no run row: its whole allowance
        ("y", TODAY - dt.timedelta(days=1), 9),
        ("y", TODAY, 2),  # a run over midnight: today's part
    ]
    assert requests_on(runs, TODAY, ledger) == 7 + 4 + 13 + 2
    assert requests_on(runs, TODAY) == 7 + 4  # without the table: the run rows only
