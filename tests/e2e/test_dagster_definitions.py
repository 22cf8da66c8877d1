"""What ships in `defs` and loads as Dagster loads it: `dagster definitions validate` on the file
(plain and with accounts), the schedules (stopped until started, one argument to start them),
the freshness policy per asset, pools, and the column descriptions read from docs/tables.md."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.sandbox_proc import REPO_ROOT

pytest.importorskip("dagster")
from dagster import AssetKey, DefaultScheduleStatus

DEFINITIONS = REPO_ROOT / "pipelines" / "dagster_definitions.py"
TABLES = ("orders", "order_line_items", "customers", "products")


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ciklek_dagster_defs_test", DEFINITIONS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("accounts", ["", "acme,bolt"])
def test_dagster_definitions_validate_loads_the_file(clean_env: Path, accounts: str) -> None:
    env = dict(os.environ, DAGSTER_HOME=str(clean_env))
    (clean_env / "dagster.yaml").write_text("")
    if accounts:
        env["SOURCES__CIKLEK__ACCOUNTS"] = accounts
    dagster = str(Path(sys.executable).parent / "dagster")
    done = subprocess.run(
        [dagster, "definitions", "validate", "-f", str(DEFINITIONS)],
        env=env,
        cwd=clean_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Validation successful" in done.stdout + done.stderr


def test_the_schedules_ship_stopped_and_start_with_one_argument(clean_env: Path) -> None:
    module = load_module()
    defs = module.defs
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"ciklek_hourly_sync", "ciklek_weekly_sweep"}
    hourly, weekly = schedules["ciklek_hourly_sync"], schedules["ciklek_weekly_sweep"]
    assert (hourly.cron_schedule, weekly.cron_schedule) == ("17 * * * *", "43 3 * * 0")
    assert hourly.execution_timezone == weekly.execution_timezone == "UTC"
    assert {s.default_status for s in schedules.values()} == {DefaultScheduleStatus.STOPPED}
    assert (hourly.job_name, weekly.job_name) == ("ciklek_sync_job", "ciklek_sweep_job")
    sync = defs.resolve_job_def("ciklek_sync_job")
    assert sync.asset_layer.executable_asset_keys == {AssetKey(["ciklek", t]) for t in TABLES}
    assert (
        len(sync.asset_layer.asset_graph.asset_check_keys) == 14
    )  # the checks come along (4 tables x 2, 3 resources x 2)
    started = module.make_definitions(run_schedules=True)
    assert {s.default_status for s in started.schedules} == {DefaultScheduleStatus.RUNNING}


def test_every_asset_has_a_freshness_policy_a_pool_and_an_upstream_api(clean_env: Path) -> None:
    defs = load_module().defs
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == {"ciklek_api", *(f"ciklek/{t}" for t in TABLES)}
    for table in TABLES:
        spec = specs[f"ciklek/{table}"]
        policy = spec.freshness_policy
        assert policy is not None
        assert policy.warn_window.to_timedelta() == dt.timedelta(hours=2)
        assert policy.fail_window.to_timedelta() == dt.timedelta(hours=6)
        assert [d.asset_key for d in spec.deps] == [AssetKey(["ciklek_api"])]
        assert spec.kinds == {"dlt", "duckdb"} and spec.group_name == "ciklek"
    assert "X-RateLimit" in specs["ciklek_api"].description
    assets = next(a for a in defs.assets if getattr(a, "op", None) is not None)
    sweep = defs.resolve_job_def("ciklek_sweep_job")
    assert assets.op.pool == sweep.graph.node_defs[0].pool == "ciklek_ciklek_dagster"


def test_docs_tables_gives_every_column_of_the_four_tables_a_meaning(clean_env: Path) -> None:
    load_module()
    from ciklek_dagster.docs_tables import read_tables_doc

    docs = read_tables_doc()
    assert docs.tables["order_line_items"].key == "`id`, with `order_id`"
    assert docs.tables["customers"].source == "`/v1/customers`"
    for table in TABLES:
        assert {"id", "_ciklek_synced_at", "_ciklek_deleted_at"} <= set(docs.columns[table])
        empty = [name for name, doc in docs.columns[table].items() if not doc.meaning]
        assert empty == [], f"{table}: columns without a meaning in docs/tables.md: {empty}"
    assert docs.columns["orders"]["subtotal"] == docs.columns["orders"]["total"]
    assert docs.columns["order_line_items"]["quantity"].type == "BIGINT"
    assert "_dlt_load_id" not in docs.columns["order_line_items"]
    assert docs.undocumented is not None and docs.column("orders", "channel") == docs.undocumented


def test_a_missing_docs_page_is_a_clear_error(tmp_path: Path) -> None:
    load_module()
    from ciklek_dagster.docs_tables import read_tables_doc

    with pytest.raises(RuntimeError, match="keep pipelines/ beside docs/"):
        read_tables_doc(tmp_path / "tables.md")
    page = "# Tables\n\n## The tables\n\n| a | b | c |\n|---|---|---|\n"
    (tmp_path / "tables.md").write_text(page)
    with pytest.raises(RuntimeError, match="no section '## Every column'"):
        read_tables_doc(tmp_path / "tables.md")
