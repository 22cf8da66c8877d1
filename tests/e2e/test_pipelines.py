"""What users schedule: the cron script (a subprocess) and the Dagster assets (in-process)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import DEFAULT_DB, query, sync_env
from tests.sandbox_proc import REPO_ROOT, SandboxProcess

PIPELINES = REPO_ROOT / "pipelines"


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PIPELINES / "ciklek_pipeline.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cron_script_syncs_and_exits_with_the_run_code(sandbox_factory, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory("--orders", 150, "--customers", 40, "--products", 20)
    env = sync_env(sb, SOURCES__CIKLEK__PAGE_SIZE="50")
    first = run_script("--resources", "orders,products", env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "ciklek sync summary" in first.stdout
    assert "progress orders: page 3/3" in first.stderr  # log lines, not a bar
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*) from ciklek.orders") == [(150,)]
    assert query(db, "select count(*) from ciklek.products") == [(20,)]
    assert query(
        db, "select count(*) from information_schema.tables where table_name = 'customers'"
    ) == [(0,)]
    assert query(db, "select outcome, requests from ciklek._ciklek_sync_runs") == [("completed", 4)]

    # Exit 75: the run budget is spent; progress is kept and the next run continues.
    sb.control_post("mutate", update=0, create=120, resource="customers")
    stopped = run_script("--resources", "customers", "--max-requests", "1", env=env)
    assert stopped.returncode == 75, stopped.stderr + stopped.stdout
    assert "--max-requests 1 reached" in stopped.stdout
    assert query(db, "select count(*) from ciklek.customers") == [(50,)]
    resumed = run_script("--resources", "customers", env=env)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert query(db, "select count(*), count(distinct id) from ciklek.customers") == [(160, 160)]


def _load_dagster_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ciklek_dagster_definitions", PIPELINES / "dagster_definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dagster_assets_materialise_into_duckdb(
    sandbox_factory, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dagster_dlt")  # a dev dependency: present in CI
    from dagster import materialize

    sb: SandboxProcess = sandbox_factory("--orders", 120, "--customers", 30, "--products", 15)
    for name, value in sync_env(sb, SOURCES__CIKLEK__PAGE_SIZE="50").items():
        if name.startswith("SOURCES__"):
            monkeypatch.setenv(name, value)
    module = _load_dagster_module()
    db = clean_env / "dagster_warehouse.duckdb"
    assets = module.make_assets(module.make_pipeline(str(db)))
    resources = {"dlt": module.DagsterDltResource()}

    result = materialize([assets], resources=resources)
    assert result.success
    keys = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert keys == {"dlt_ciklek_orders", "dlt_ciklek_customers", "dlt_ciklek_products"}
    assert query(db, "select count(*) from ciklek.orders") == [(120,)]
    assert query(db, "select count(*) from ciklek.customers") == [(30,)]
    assert query(db, "select count(*) from ciklek.products") == [(15,)]
    items = query(db, "select count(*) from ciklek.order_line_items where not _ciklek_deleted")[0][
        0
    ]
    assert items > 120  # every order has at least one line item in the sandbox

    # A second materialisation is incremental: the watermark survived in dlt's state.
    sb.control_post("mutate", update=2, create=3, resource="orders")
    sb.control_post("reset_stats")
    again = materialize([assets], resources=resources)
    assert again.success
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(123, 123)]
    assert sb.stats()["by_path"] == {"/v1/orders": 1, "/v1/customers": 1, "/v1/products": 1}
    assert module.defs is not None  # the module-level Definitions dagster loads also builds


def test_cron_script_documents_exit_codes_and_a_crontab_line() -> None:
    doc = (PIPELINES / "ciklek_pipeline.py").read_text()
    for code in ("0 ", "75 ", "2 ", "3 ", "4 ", "1 "):
        assert f"\n    {code}" in doc
    assert "* * * *" in doc
    assert os.access(PIPELINES / "ciklek_pipeline.py", os.R_OK)
