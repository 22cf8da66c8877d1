"""Records whose change reaches the API late (its `updated_at` already behind what a sync or a
sweep passed) against the real sandbox, in-process: the look-back of incremental syncs loads
them, a no-change sync stays one request per resource, and a sweep re-reads what changed while
it ran, so it marks no live record, with or without `--force`.

The sandbox makes a change late on demand (`POST /_sandbox/mutate?...&late_seconds=30` stamps
it 30 s in the past; a PATCH may set `updated_at` itself), so nothing here waits. The three
tests that finish a sweep with late commits share the syncs that stopped it (`stopped_sweep`):
each finishes its own copy of that warehouse and state directory, against the same sandbox.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.config.settings import DEFAULT_LOOKBACK_SECONDS
from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.runs.sync import run_sync
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    PAGE,
    api_records,
    assert_orders_match_api,
    copy_warehouse,
    fast_env,
    instant,
    set_env,
    shared_warehouse,
)

FLAGS = ("--orders", 100, "--customers", 10, "--products", 5, "--window-limit", 1_000_000)


def use(sandbox: SandboxProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # One chunk per sync: no test here is about where a chunk ends, and each chunk is a load.
    env = fast_env(
        sandbox, SOURCES__CIKLEK__HISTORY="orders", SOURCES__CIKLEK__CHECKPOINT_PAGES="100"
    )
    set_env(monkeypatch, env)


@pytest.fixture
def sb(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> SandboxProcess:
    sandbox: SandboxProcess = sandbox_factory(*FLAGS)
    use(sandbox, monkeypatch)
    return sandbox


def sync(**options: object) -> SyncResult:
    opts: dict[str, Any] = {"resources": ["orders"], "progress": False, **options}
    return run_sync(SyncOptions(**opts))


def synced_at(db: Path) -> dict[str, Any]:
    return dict(query(db, "select id, _ciklek_synced_at from ciklek.orders"))


@pytest.mark.parametrize(("lookback", "loaded"), [(60, True), (0, False)])
def test_a_change_visible_30_s_late_is_loaded_with_a_60_s_look_back_and_missed_without(
    sb: SandboxProcess,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    lookback: int,
    loaded: bool,
) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__LOOKBACK_SECONDS", str(lookback))
    db = clean_env / DEFAULT_DB
    assert sync().exit_code == 0
    # More than a page changes: the last page (where a look-back of 0 resumes) holds only
    # records changed now, so a record stamped 30 s ago lies behind its cursor.
    sb.control_post("mutate", resource="orders", update=PAGE + 3)
    second = sync()
    watermark = instant(second.watermarks["orders"])
    assert second.report.outcome("orders").rows == PAGE + 3
    before = synced_at(db)

    # Committed now, stamped 30 s ago: behind the watermark the last sync left.
    (late,) = sb.control_post("mutate", resource="orders", update=1, late_seconds=30)["updated"]
    late_at = instant(api_records(sb)[late]["updated_at"])
    assert late_at is not None and watermark is not None and late_at < watermark

    third = sync()
    assert third.exit_code == 0
    assert third.report.outcome("orders").rows == (1 if loaded else 0)
    in_warehouse = query(db, f"select updated_at from ciklek.orders where id = '{late}'")
    assert (in_warehouse == [(late_at,)]) is loaded
    if loaded:
        assert_orders_match_api(db, sb)
        # The window's other versions were skipped: not rewritten, no version twice.
        after = synced_at(db)
        assert {rid for rid in before if after[rid] != before[rid]} == {late}
        versions = "select count(*), count(distinct (id, updated_at)) from ciklek.orders_versions"
        assert query(db, versions) == [(124, 124)]  # 100, the 23 changed, the late one
        assert third.log.requests == 2  # the 24 records of the window: two pages


def test_with_the_default_look_back_a_no_change_sync_is_one_request_per_resource(
    sb: SandboxProcess, clean_env: Path
) -> None:
    db = clean_env / DEFAULT_DB
    everything = ["orders", "customers", "products"]
    assert sync(resources=everything).exit_code == 0
    sb.control_post("mutate", resource="orders", update=PAGE - 1)  # the window: under a page
    assert sync(resources=everything).report.outcome("orders").rows == PAGE - 1
    before = synced_at(db)

    idle = sync(resources=everything)
    assert idle.exit_code == 0
    assert idle.log.requests == 3  # one per resource
    assert sum(o.rows for o in idle.report.outcomes.values()) == 0
    assert synced_at(db) == before  # nothing rewritten
    assert query(db, "select count(*) from ciklek.orders_versions") == [(100 + PAGE - 1,)]

    # The window holds more than a page: the look-back costs one request per page of it.
    sb.control_post("mutate", resource="orders", update=2 * PAGE)
    assert sync(resources=everything).exit_code == 0
    busy = sync(resources=everything)
    in_window = query(
        db,
        "select count(*) from ciklek.orders where updated_at >= "
        f"(select max(updated_at) from ciklek.orders) - interval {DEFAULT_LOOKBACK_SECONDS:g} "
        "seconds",
    )[0][0]
    assert in_window >= 2 * PAGE
    assert busy.log.for_endpoint("/orders").requests == math.ceil(in_window / PAGE)
    assert busy.report.outcome("orders").rows == 0


def _late_commits_during_a_sweep(sb: SandboxProcess) -> list[str]:
    """A sweep stopped with the last pages ahead of it; then five of the records there change,
    stamped before where the sweep stands (their commit reached the API late): they move
    behind it, and the rest of the walk never meets them."""
    assert sync().exit_code == 0
    sb.control_post("mutate", resource="orders", update=2 * PAGE)  # the newest two pages
    assert sync().exit_code == 0
    stopped = sync(sweep=True, max_requests=4)  # pages 1-4 of 5
    assert stopped.exit_code == 75
    ordered = sorted(api_records(sb).values(), key=lambda r: (instant(r["updated_at"]), r["id"]))
    behind = ordered[3 * PAGE]["updated_at"]  # the first record of page 4, passed already
    moved = [r["id"] for r in ordered[4 * PAGE : 4 * PAGE + 5]]  # on page 5, still ahead
    for rid in moved:
        response = sb.control_request(
            "PATCH", f"records/orders/{rid}", json={"status": "cancelled", "updated_at": behind}
        )
        assert response.status_code == 200, response.text
    return moved


Stopped = tuple[Path, SandboxProcess, list[str]]  # base dir, sandbox, the five moved ids


@pytest.fixture(scope="module")
def stopped_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    """One sandbox, and a warehouse with its state directory, as `_late_commits_during_a_sweep`
    leaves them: the tests below only finish that sweep, each on a copy of the warehouse and
    state (`copy_of`), and only read the sandbox, so the four syncs before are run once."""
    base = tmp_path_factory.mktemp("stopped-sweep")
    with shared_warehouse(base, FLAGS) as sandbox, pytest.MonkeyPatch.context() as mp:
        use(sandbox, mp)
        yield base, sandbox, _late_commits_during_a_sweep(sandbox)


def copy_of(
    stopped: Stopped, work: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[SandboxProcess, list[str]]:
    """This test's own copy of the stopped sweep's warehouse and state directory."""
    base, sandbox, moved = stopped
    copy_warehouse(base, work, monkeypatch)
    use(sandbox, monkeypatch)
    return sandbox, list(moved)


@pytest.mark.parametrize("force", [False, True], ids=["sweep", "sweep --force"])
def test_a_sweep_with_late_commits_marks_no_live_record(
    stopped_sweep: Stopped,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    force: bool,
) -> None:
    db = clean_env / DEFAULT_DB
    sb, moved = copy_of(stopped_sweep, clean_env, monkeypatch)
    completed = sync(sweep=True, force=force)
    assert completed.exit_code == 0, completed.messages
    out = completed.report.outcome("orders")
    assert out.marked_deleted == 0
    assert query(db, "select count(*) from ciklek.orders where _ciklek_deleted_at is not null") == [
        (0,)
    ]
    assert any(n.startswith("sweep re-read the changes since") for n in out.notes)
    assert_orders_match_api(db, sb)  # the moved records' new versions were merged
    statuses = query(db, f"select distinct status from ciklek.orders where id in {tuple(moved)}")
    assert statuses == [("cancelled",)]
    ended = "select count(*) from ciklek.orders_versions where _ciklek_deleted_at is not null"
    assert query(db, ended) == [(0,)]
    versions = f"select count(*) from ciklek.orders_versions where id in {tuple(moved)}"
    assert query(db, versions) == [(15,)]  # each: as generated, as changed, as moved


def test_without_the_look_back_the_same_sweep_would_mark_live_records(
    stopped_sweep: Stopped, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the re-read exists: with `lookback_seconds = 0` the sweep misses the five, its guard
    refuses (they are fewer than the list announced), and forcing it marks five live orders."""
    db = clean_env / DEFAULT_DB
    sb, moved = copy_of(stopped_sweep, clean_env, monkeypatch)
    monkeypatch.setenv("SOURCES__CIKLEK__LOOKBACK_SECONDS", "0")  # the same sweep, finished
    refused = sync(sweep=True)
    assert refused.exit_code == 6
    assert "the list left records out" in (refused.report.outcome("orders").sweep_refused or "")
    forced = sync(sweep=True, force=True)
    assert forced.exit_code == 0
    marked = query(db, "select id from ciklek.orders where _ciklek_deleted_at is not null")
    assert sorted(r[0] for r in marked) == sorted(moved)
    assert set(moved) <= set(api_records(sb))  # live upstream all the same


def test_plan_counts_the_look_back_window_of_the_next_sync(
    sb: SandboxProcess,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from connector.cli import main

    assert sync().exit_code == 0
    sb.control_post("mutate", resource="orders", update=PAGE + 5)  # all within the look-back
    assert sync().exit_code == 0
    capsys.readouterr()

    def planned() -> tuple[list[str], str]:
        assert main(["plan", "--resources", "orders"]) == 0
        out = capsys.readouterr().out
        row = next(line.split() for line in out.splitlines() if "│ orders" in line)
        return row[1:8:2], out  # resource, records, next sync: records, next sync: requests

    row, out = planned()
    assert row == ["orders", "100", str(PAGE + 5), "2"]  # the window is re-read: two pages
    assert "each sweep then re-reads what changed while it ran" in out
    monkeypatch.setenv("SOURCES__CIKLEK__LOOKBACK_SECONDS", "0")
    row, out = planned()
    assert row == ["orders", "100", "1", "1"]  # from the watermark: its own record
    assert "re-reads" not in out


def test_the_sandbox_refuses_a_late_seconds_that_is_not_a_duration(sb: SandboxProcess) -> None:
    for bad in ("-1", "soon", "nan"):
        response = sb.control_request(
            "POST", "mutate", params={"resource": "orders", "update": 1, "late_seconds": bad}
        )
        assert response.status_code == 400, bad
        assert "late_seconds" in response.json()["error"]
