"""The Dagster sweep job (pipelines/dagster_sweep.py) runs a sweep through run_sync: it marks
the deleted records, and fails the Dagster run when the delete guard refuses (exit 6)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import query, sync_env
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import api_records

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ciklek_dagster_sweep", PIPELINES / "dagster_sweep.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dagster_sweep_job_marks_deletes_and_fails_on_a_refusal(
    sandbox_factory: Any, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dagster")
    sb: SandboxProcess = sandbox_factory("--orders", 40, "--customers", 40, "--products", 5)
    for name, value in sync_env(sb, SOURCES__CIKLEK__PAGE_SIZE="50").items():
        if name.startswith("SOURCES__"):
            monkeypatch.setenv(name, value)
    db = clean_env / "dagster_warehouse.duckdb"
    job = _load().make_sweep_job(duckdb_file=str(db), resources=["customers"])

    assert job.execute_in_process().success  # an empty warehouse: the sweep loads everything
    assert query(db, "select count(*) from ciklek.customers") == [(40,)]
    gone = sorted(api_records(sb, "customers"))[:2]
    for rid in gone:
        sb.control_request("DELETE", f"records/customers/{rid}")
    assert job.execute_in_process().success
    dead = query(db, "select id from ciklek.customers where _ciklek_deleted_at is not null")
    assert {r[0] for r in dead} == set(gone)

    sb.control_post("hide", json={"resource": "customers", "share": 0.5})
    refused = job.execute_in_process(raise_on_error=False)
    assert not refused.success
    dead = query(db, "select id from ciklek.customers where _ciklek_deleted_at is not null")
    assert {r[0] for r in dead} == set(gone)  # nothing more marked
