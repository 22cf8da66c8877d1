"""`ciklek sweep` against the real sandbox, in-process: marks exactly the records deleted
upstream (with their line items), refuses what looks like a broken list, resumes like a sync.

Small data (80 orders, 40 customers) and 20-record pages: deleting 5 orders and 3 customers
stays under the 10 % guard, and a sweep takes a handful of requests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from connector.sync import SyncOptions, SyncResult, run_sync
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import api_records, fast_env, set_env

FLAGS = ("--orders", 80, "--customers", 40, "--products", 10, "--window-limit", 1_000_000)
RESOURCES = ["orders", "customers"]


@pytest.fixture
def sb(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> SandboxProcess:
    sandbox: SandboxProcess = sandbox_factory(*FLAGS)
    set_env(monkeypatch, fast_env(sandbox))
    return sandbox


def sync(**options: object) -> SyncResult:
    opts: dict[str, Any] = {"resources": RESOURCES, "progress": False, **options}
    return run_sync(SyncOptions(**opts))


def sweep(**options: object) -> SyncResult:
    return sync(sweep=True, **options)


def delete(sb: SandboxProcess, resource: str, ids: list[str]) -> None:
    for rid in ids:
        assert sb.control_request("DELETE", f"records/{resource}/{rid}").status_code == 200


def marked(db: Path, table: str, key: str = "id") -> set[str]:
    rows = query(db, f"select {key} from ciklek.{table} where _ciklek_deleted_at is not null")
    return {r[0] for r in rows}


def live(db: Path, table: str) -> set[str]:
    return {r[0] for r in query(db, f"select id from ciklek.{table} where _ciklek_deleted_at is null")}


def test_sweep_marks_exactly_the_deleted_records(sb: SandboxProcess, clean_env: Path) -> None:
    db = clean_env / DEFAULT_DB
    assert sync().exit_code == 0
    orders, customers = sorted(api_records(sb)), sorted(api_records(sb, "customers"))
    gone_orders, gone_customers = orders[3:8], customers[10:13]
    delete(sb, "orders", gone_orders)
    delete(sb, "customers", gone_customers)
    assert sync().exit_code == 0  # a sync cannot see deletes: nothing marked
    assert marked(db, "orders") == set() and marked(db, "customers") == set()

    before = sb.stats()["requests"]
    result = sweep()
    assert result.exit_code == 0, result.messages
    assert sb.stats()["requests"] - before == 4 + 2  # ceil(75/20) + ceil(37/20): the whole lists
    assert marked(db, "orders") == set(gone_orders)
    assert marked(db, "customers") == set(gone_customers)
    assert live(db, "orders") == set(orders) - set(gone_orders)
    assert live(db, "customers") == set(customers) - set(gone_customers)
    items = query(db, "select order_id, _ciklek_deleted_at is not null from ciklek.order_line_items")
    assert {o for o, dead in items if dead} == set(gone_orders)
    assert all(not dead for o, dead in items if o not in gone_orders)
    assert result.report.outcome("orders").marked_deleted == 5
    run = query(
        db,
        "select kind, rows_marked_deleted, exit_code from ciklek._ciklek_sync_runs "
        "order by started_at desc limit 1",
    )
    assert run == [("sweep", 8, 0)]
    at = query(db, "select distinct _ciklek_deleted_at from ciklek.customers where _ciklek_deleted_at is not null")
    assert len(at) == 1 and isinstance(at[0][0], dt.datetime) and at[0][0].tzinfo is not None

    # A record that comes back (same id) is live again after the next sync.
    sb.control_post(f"records/customers/{gone_customers[0]}/recreate", json={})
    assert sync().exit_code == 0
    assert marked(db, "customers") == set(gone_customers[1:])
    # A second sweep marks nothing new and keeps the marks.
    again = sweep()
    assert again.exit_code == 0
    assert marked(db, "customers") == set(gone_customers[1:])
    assert marked(db, "orders") == set(gone_orders)
