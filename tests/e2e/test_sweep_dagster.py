"""The Dagster sweep job (pipelines/ciklek_dagster/sweep.py) on `run_sync(..., sweep=True)`: it
marks the deleted records and says so on each swept table, fails the Dagster run when the delete
guard refuses (exit 6), waits (retries with its reason) while a materialisation holds the
pipeline, shares the assets' pool, and runs once per account when the assets are partitioned."""

from __future__ import annotations

import datetime as dt
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connector.api.limiter import _REGISTRY
from connector.runs.lock import lock_is_held
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import REPO_ROOT, SandboxProcess
from tests.syncutil import api_records

pytest.importorskip("dagster")
from dagster import (
    DagsterEventType,
    DagsterInstance,
    EventRecordsFilter,
    build_schedule_context,
    materialize,
)

PIPELINES = REPO_ROOT / "pipelines"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ciklek_{name}_test", PIPELINES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use(monkeypatch: pytest.MonkeyPatch, sb: SandboxProcess, **settings: str) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__BASE_URL", sb.url)
    monkeypatch.setenv("SOURCES__CIKLEK__API_KEY", sb.key)
    monkeypatch.setenv("SOURCES__CIKLEK__PAGE_SIZE", "50")
    for name, value in settings.items():
        monkeypatch.setenv(f"SOURCES__CIKLEK__{name.upper()}", value)
    _REGISTRY.clear()


def events(result: Any, kind: DagsterEventType) -> list[Any]:
    return [e for e in result.all_events if e.event_type == kind]


def observed(result: Any) -> dict[tuple[str, str | None], dict[str, Any]]:
    """(asset, partition) -> the observation's metadata values."""
    found = {}
    for event in events(result, DagsterEventType.ASSET_OBSERVATION):
        obs = event.event_specific_data.asset_observation
        key = (obs.asset_key.to_user_string(), obs.partition)
        found[key] = {k: v.value for k, v in obs.metadata.items()}
    return found


def test_the_sweep_job_marks_deletes_on_the_swept_table_and_fails_on_a_refusal(
    sandbox_factory: Callable[..., SandboxProcess], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb: SandboxProcess = sandbox_factory("--orders", 40, "--customers", 40, "--products", 5)
    use(monkeypatch, sb)
    db = clean_env / "dagster_warehouse.duckdb"
    job = _load("dagster_sweep").make_sweep_job(duckdb_file=str(db), resources=["customers"])

    first = job.execute_in_process()  # an empty warehouse: the sweep loads everything
    assert first.success
    assert query(db, "select count(*) from ciklek.customers") == [(40,)]
    swept = observed(first)[("ciklek/customers", None)]
    assert (swept["rows_loaded"], swept["rows_marked_deleted"]) == (40, 0)
    assert swept["dagster/row_count"] == 40 and swept["sweep_complete"] is True
    assert ("ciklek/orders", None) not in observed(first)  # not swept: nothing said of it
    gone = sorted(api_records(sb, "customers"))[:2]
    for rid in gone:
        sb.control_request("DELETE", f"records/customers/{rid}")
    second = job.execute_in_process()
    assert second.success
    dead = query(db, "select id from ciklek.customers where _ciklek_deleted_at is not null")
    assert {r[0] for r in dead} == set(gone)
    swept = observed(second)[("ciklek/customers", None)]
    assert swept["rows_marked_deleted"] == 2 and swept["table_rows_marked_deleted"] == 2
    run = observed(second)[("ciklek_api", None)]
    # One page of 38 customers, and the re-read of what changed since the sweep began (one more).
    assert run["kind"] == "sweep" and run["requests"] == 2
    assert "own_budget_left_today" in run and "api_ratelimit_remaining" in run

    sb.control_post("hide", json={"resource": "customers", "share": 0.5})
    refused = job.execute_in_process(raise_on_error=False)
    assert not refused.success
    failure = events(refused, DagsterEventType.STEP_FAILURE)[0].event_specific_data
    assert "sweep refused to mark" in failure.user_failure_data.description
    assert "--force" in failure.user_failure_data.description
    assert "sweep refused" in observed(refused)[("ciklek/customers", None)]["sweep_refused"]
    dead = query(db, "select id from ciklek.customers where _ciklek_deleted_at is not null")
    assert {r[0] for r in dead} == set(gone)  # nothing more marked


def test_a_sweep_launched_during_a_materialisation_retries_with_its_reason(
    sandbox_factory: Callable[..., SandboxProcess], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 17 pages of 250 ms, one at a time: the materialisation holds the pipeline for seconds.
    sb = sandbox_factory("--orders", 120, "--customers", 30, "--products", 15, "--latency-ms", 250)
    use(monkeypatch, sb, page_size="10", max_concurrency="1")
    module = _load("dagster_definitions")
    assets = module.make_assets()
    sweep = module.make_sweep_job(resources=["customers"], max_retries=60, retry_seconds=0.5)
    assert sweep.graph.node_defs[0].pool == assets.op.pool == "ciklek_ciklek_dagster"

    materialised: list[Any] = []
    worker = threading.Thread(target=lambda: materialised.append(materialize([assets])))
    worker.start()
    home = Path(clean_env).parent / "ciklek-home"
    for _ in range(600):
        if lock_is_held(home, "ciklek_dagster") or not worker.is_alive():
            break
        threading.Event().wait(0.01)
    assert lock_is_held(home, "ciklek_dagster"), "the materialisation never took the lock"
    instance = DagsterInstance.ephemeral()
    # Once the sweep was told the pipeline is busy, the materialisation need not stay slow:
    # the sandbox's latency (a runtime setting) drops to 0, and the sweep's retry gets its turn.
    swept_done = threading.Event()
    waiter = threading.Thread(target=_fast_after_a_retry, args=(instance, sb, swept_done))
    waiter.start()
    try:
        result = sweep.execute_in_process(instance=instance, raise_on_error=False)
    finally:
        swept_done.set()
        waiter.join(timeout=30)
    worker.join(timeout=120)
    assert materialised and materialised[0].success
    assert result.success, [e.message for e in result.all_events][-5:]
    retried = events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert retried, "the sweep should have found the pipeline busy"
    error = retried[0].event_specific_data.error
    assert "another sync of pipeline 'ciklek_dagster' is running" in error.message
    assert not [frame for frame in error.stack if "/connector/" in frame]
    assert events(result, DagsterEventType.STEP_FAILURE) == []
    lines = [entry.message for entry in instance.all_logs(result.run_id)]
    assert any("is running" in m and "retrying in 0.5 s" in m for m in lines)
    swept = {k: v for k, v in observed(result).items() if k[0] == "ciklek/customers"}
    assert swept[("ciklek/customers", None)]["rows_marked_deleted"] == 0
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*) from ciklek.customers") == [(30,)]


def _fast_after_a_retry(
    instance: DagsterInstance, sb: SandboxProcess, stop: threading.Event
) -> None:
    """Latency 0 once the sweep's run asked for a retry (or the sweep is over). Reads the event
    log only: the in-memory event log storage takes a lock for each connection."""
    retries = EventRecordsFilter(event_type=DagsterEventType.STEP_UP_FOR_RETRY)
    while not stop.wait(0.05):
        if instance.get_event_records(retries, limit=1):
            break
    sb.control_post("faults", json={"latency_ms": 0})


def test_two_accounts_get_a_sweep_each_and_the_shipped_schedules_ask_for_both(
    sandbox_factory: Callable[..., SandboxProcess], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme, bolt = "bsk_test_acme_sweep", "bsk_test_bolt_sweep"
    sb = sandbox_factory(
        "--orders", 20, "--customers", 20, "--products", 5,
        "--key", f"{acme}=customers:read", "--key", f"{bolt}=customers:read",
    )  # fmt: skip
    use(monkeypatch, sb)
    monkeypatch.setenv("ACME__SOURCES__CIKLEK__API_KEY", acme)
    monkeypatch.setenv("BOLT__SOURCES__CIKLEK__API_KEY", bolt)
    defs = _load("dagster_definitions").make_definitions(accounts=["acme", "bolt"])
    job = defs.resolve_job_def("ciklek_sweep_job")
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys() == ["acme", "bolt"]
    for name in ("ciklek_weekly_sweep", "ciklek_hourly_sync"):
        schedule = defs.resolve_schedule_def(name)
        tick = build_schedule_context(
            scheduled_execution_time=dt.datetime(2026, 3, 1, 3, 43),
            repository_def=defs.get_repository_def(),
        )
        requests = schedule.evaluate_tick(tick).run_requests or []
        assert [r.partition_key for r in requests] == ["acme", "bolt"], name

    db = clean_env / DEFAULT_DB
    for account in ("acme", "bolt"):
        result = job.execute_in_process(partition_key=account)
        assert result.success
        swept = observed(result)[("ciklek/customers", account)]
        assert swept["rows_loaded"] == 20 and swept["rows_marked_deleted"] == 0
        assert swept["dagster/table_name"] == f"duckdb.ciklek_{account}.customers"
        assert query(db, f"select count(*) from ciklek_{account}.customers") == [(20,)]
    counted = sb.stats()["counted_today"]
    assert all(counted.get(SandboxProcess.fingerprint(k), 0) >= 1 for k in (acme, bolt))
