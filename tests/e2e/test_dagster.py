"""Dagster assets on `run_sync`, through Dagster's own API (`materialize`, an ephemeral
instance) against the real sandbox: what an operator reads in the UI.

Table metadata as dagster-dlt sets it (description, `dagster/column_schema` from the dlt schema
described by docs/tables.md, `dagster/row_count`, `dagster/table_name`) and the run's figures
once (the `ciklek_api` observation); a check-only selection that sends no request; a retry whose
event says why; a quota stop whose `sync_complete` names the limit and the resume time, with the
API's allowance and the own budget as two keys; one partition per account, checks included.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connector.api.limiter import _REGISTRY
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import REPO_ROOT, SandboxProcess

pytest.importorskip("dagster")
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    materialize,
)

DEFINITIONS = REPO_ROOT / "pipelines" / "dagster_definitions.py"
TABLES = ("orders", "order_line_items", "customers", "products")
KEYS = {f"ciklek/{t}" for t in TABLES}
PARENTS = ("orders", "customers", "products")
CHECKS = {
    *((f"ciklek/{t}", c) for t in TABLES for c in ("sync_complete", "schema_unchanged")),
    *((f"ciklek/{t}", c) for t in PARENTS for c in ("no_rejects", "reconciled")),
}
FLAGS = ("--orders", 120, "--customers", 30, "--products", 15)


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ciklek_dagster_test_defs", DEFINITIONS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use(monkeypatch: pytest.MonkeyPatch, sb: SandboxProcess, key: str | None = None) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__BASE_URL", sb.url)
    monkeypatch.setenv("SOURCES__CIKLEK__API_KEY", key or sb.key)
    monkeypatch.setenv("SOURCES__CIKLEK__PAGE_SIZE", "50")
    _REGISTRY.clear()  # the process-wide limiter must not remember another test's 429


def events(result: Any, kind: DagsterEventType) -> list[Any]:
    return [e for e in result.all_events if e.event_type == kind]


def metadata(result: Any) -> dict[str, dict[str, Any]]:
    return {
        m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }


def observed(result: Any) -> dict[str, dict[str, Any]]:
    found = {}
    for event in events(result, DagsterEventType.ASSET_OBSERVATION):
        obs = event.event_specific_data.asset_observation
        found[obs.asset_key.to_user_string()] = {k: v.value for k, v in obs.metadata.items()}
    return found


def checks(result: Any) -> dict[tuple[str, str], Any]:
    found = {}
    for event in events(result, DagsterEventType.ASSET_CHECK_EVALUATION):
        data = event.event_specific_data
        found[(data.asset_key.to_user_string(), data.check_name)] = data
    return found


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    """Every line the run logged (what the UI's event log shows), in order."""
    return [entry.message for entry in instance.all_logs(run_id)]


def docs_columns() -> Any:
    from ciklek_dagster.docs_tables import read_tables_doc  # loaded by load_module()

    return read_tables_doc()


def test_every_table_materialises_with_its_table_metadata_then_incrementally(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = sandbox_factory(*FLAGS)
    use(monkeypatch, sb)
    module = load_module()
    assets = module.make_assets()
    instance = DagsterInstance.ephemeral()
    result = materialize([assets], instance=instance)
    assert result.success
    meta = metadata(result)
    assert set(meta) == KEYS
    db = clean_env / DEFAULT_DB
    docs = docs_columns()
    assert docs.columns["orders"]["total"].type == "DECIMAL(38,2)"  # the docs parse as expected
    assert len(docs.columns["orders"]) >= 15
    for table in TABLES:
        m = meta[f"ciklek/{table}"]
        assert m["dagster/row_count"] == query(db, f"select count(*) from ciklek.{table}")[0][0]
        assert m["dagster/table_name"] == f"duckdb.ciklek.{table}"
        columns = {c.name: c for c in m["dagster/column_schema"].columns}
        assert set(docs.columns[table]) <= set(columns), table  # every documented column
        for name, doc in docs.columns[table].items():
            assert (columns[name].type, columns[name].description) == (doc.type, doc.meaning)
        for name in set(columns) - set(docs.columns[table]):  # the sandbox's extra fields
            assert columns[name].description.startswith("a field the API sends but does not")
    assert meta["ciklek/orders"]["rows_loaded"] == 120
    assert meta["ciklek/customers"]["rows_loaded"] == 30
    assert meta["ciklek/products"]["rows_loaded"] == 15
    items = meta["ciklek/order_line_items"]
    assert items["rows_loaded"] == items["dagster/row_count"] > 120
    assert meta["ciklek/orders"]["complete"] is True and meta["ciklek/orders"]["watermark"]
    assert meta["ciklek/orders"]["endpoint_requests"] == 3  # 120 orders, 50 a page
    assert "requests" not in meta["ciklek/orders"]  # the run's total is the run's, said once
    run = observed(result)["ciklek_api"]
    assert run["requests"] == 5 and run["rate_limited_429s"] == 0
    assert run["requests_by_endpoint"] == {"/v1/customers": 1, "/v1/orders": 3, "/v1/products": 1}
    assert run["api_ratelimit_limit"] == 120 and 0 <= run["api_ratelimit_remaining"] < 120
    assert run["own_budget_left_today"] == run["own_daily_budget"] - 5
    evaluated = checks(result)
    assert set(evaluated) == CHECKS and all(c.passed and c.description for c in evaluated.values())
    assert "Traversal of the whole list: 120 distinct of 120 expected" in (
        evaluated[("ciklek/orders", "reconciled")].description
    )
    assert not [m for m in messages(instance, result.run_id) if "did not yield" in m]
    # What the UI shows before any run: a description on every asset and every check.
    defs = module.make_definitions()
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert specs["ciklek/orders"].description.startswith("One row per Ciklek order")
    assert "From: `/v1/customers`" in specs["ciklek/customers"].description
    assert specs["ciklek/orders"].deps[0].asset_key == AssetKey(["ciklek_api"])
    assert all(spec.description for spec in assets.check_specs)
    assert query(db, "select pipeline, outcome from ciklek._ciklek_sync_runs") == [
        ("ciklek_dagster", "completed")
    ]

    sb.control_post("fields", json={"resource": "orders", "add": {"loyalty_tier": "gold"}})
    sb.control_post("mutate", update=2, create=3, resource="orders")
    sb.control_post("reset_stats")
    again = materialize([assets])
    assert again.success
    # The API began to send a field: one new column, and that table's check WARNs.
    changed = checks(again)[("ciklek/orders", "schema_unchanged")]
    assert not changed.passed and changed.severity == AssetCheckSeverity.WARN
    assert "new column loyalty_tier" in changed.description
    assert changed.metadata["schema_changes"].value == 1
    assert checks(again)[("ciklek/customers", "schema_unchanged")].passed
    recorded = 'select "column", change from ciklek._ciklek_schema_changes'
    assert query(db, recorded) == [("loyalty_tier", "new_column")]
    assert sb.stats()["by_path"] == {"/v1/orders": 1, "/v1/customers": 1, "/v1/products": 1}
    meta = metadata(again)
    assert meta["ciklek/orders"]["rows_loaded"] == 5
    assert meta["ciklek/orders"]["dagster/row_count"] == 123
    assert meta["ciklek/products"]["rows_loaded"] == 0
    assert meta["ciklek/products"]["dagster/row_count"] == 15
    reconciled = checks(again)[("ciklek/products", "reconciled")]
    # A no-change run re-reads the look-back window, a slice of the list: it compares the
    # table, and says it could not compare with the API's total.
    assert reconciled.passed and reconciled.metadata["table_rows"].value == 15
    assert "compared" not in reconciled.metadata
    assert "Table: 15 rows, 15 distinct ids" in reconciled.description
    assert "Not compared with the API's meta.total" in reconciled.description

    # A subset: only the selected tables' resources are synced and materialised.
    sb.control_post("reset_stats")
    subset = materialize([assets], selection=["ciklek/customers"])
    assert subset.success and set(metadata(subset)) == {"ciklek/customers"}
    assert sb.stats()["by_path"] == {"/v1/customers": 1}
    # Line items alone load their orders too: both are recorded, the orders without checks.
    sb.control_post("mutate", update=1, resource="orders")
    items = materialize([assets], selection=["ciklek/order_line_items"])
    assert items.success and set(metadata(items)) == {"ciklek/order_line_items", "ciklek/orders"}
    assert metadata(items)["ciklek/orders"]["rows_loaded"] == 1
    assert {k[0] for k in checks(items)} == {"ciklek/order_line_items"}


def test_a_check_only_selection_sends_no_request_and_gives_each_check_a_real_result(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = sandbox_factory(*FLAGS, "--bad-records", 0.05)
    use(monkeypatch, sb)
    assets = load_module().make_assets()
    first = materialize([assets])
    assert first.success
    rejected = checks(first)[("ciklek/orders", "no_rejects")].metadata["rejects"].value
    db = clean_env / DEFAULT_DB
    in_table = "select count(*) from ciklek._ciklek_rejects where resource = 'orders'"
    assert rejected == query(db, in_table)[0][0] > 0
    sb.control_post("mutate", update=4, create=3, resource="orders")
    sb.control_post("reset_stats")

    instance = DagsterInstance.ephemeral()
    only = materialize([assets], selection=AssetSelection.all_asset_checks(), instance=instance)
    assert only.success
    assert sb.stats()["requests"] == 0
    assert only.get_asset_materialization_events() == []
    evaluated = checks(only)
    assert set(evaluated) == CHECKS and all(c.description for c in evaluated.values())
    complete = evaluated[("ciklek/orders", "sync_complete")]
    assert complete.passed and "completed" in complete.description
    # The last run's rejects, counted in `_ciklek_rejects`: the same number the run reported.
    no_rejects = evaluated[("ciklek/orders", "no_rejects")]
    assert not no_rejects.passed and no_rejects.metadata["rejects"].value == rejected
    reconciled = evaluated[("ciklek/orders", "reconciled")]
    loaded = query(db, "select count(*) from ciklek.orders")[0][0]
    assert reconciled.passed and reconciled.metadata["table_rows"].value == loaded
    assert "Not compared with the API's meta.total" in reconciled.description
    assert not [m for m in messages(instance, only.run_id) if "did not yield" in m]

    # The changes are still to be loaded, and the next materialisation records them.
    again = materialize([assets])
    assert metadata(again)["ciklek/orders"]["rows_loaded"] == 7
    assert sb.stats()["requests"] == 3


def test_checks_alone_on_an_empty_warehouse_say_so_and_create_no_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sandbox at all: a check-only run needs neither the API nor its key. And the
    translator renames keys and adds owners and tags, checks following the keys."""
    module = load_module()

    class Owned(module.CiklekTranslator):  # type: ignore[name-defined,misc]
        def get_asset_spec(self, table: str, default: Any) -> Any:
            return default.replace_attributes(
                key=AssetKey(["warehouse", table]), owners=["team:data"], tags={"tier": "1"}
            )

    assets = module.make_assets(translator=Owned())
    specs = {s.key.to_user_string(): s for s in assets.specs}
    assert set(specs) == {f"warehouse/{t}" for t in TABLES}
    assert all(s.owners == ["team:data"] and s.tags["tier"] == "1" for s in specs.values())
    only = materialize([assets], selection=AssetSelection.all_asset_checks())
    assert only.success
    evaluated = checks(only)
    assert {k[0] for k in evaluated} == set(specs)
    complete = evaluated[("warehouse/orders", "sync_complete")]
    assert not complete.passed and "No sync of this table recorded" in complete.description
    reconciled = evaluated[("warehouse/orders", "reconciled")]
    assert reconciled.passed and "does not exist yet" in reconciled.description
    assert not (clean_env / DEFAULT_DB).exists()


def test_refused_key_fails_without_retry(
    sandbox_factory: Callable[..., SandboxProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox_factory(*FLAGS)
    use(monkeypatch, sb, key="bsk_test_revoked_dagster")
    instance = DagsterInstance.ephemeral()
    result = materialize([load_module().make_assets()], raise_on_error=False, instance=instance)
    assert not result.success
    assert events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    failure = events(result, DagsterEventType.STEP_FAILURE)[0]
    text = str(failure.event_specific_data.error)
    assert "401" in text
    assert not [m for m in messages(instance, result.run_id) if "bsk_test_revoked_dagster" in m]
    assert sb.stats()["requests"] <= 3  # one refusal per resource at most, no retry


def test_a_500_storm_logs_its_cause_and_the_retry_event_carries_it(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = sandbox_factory(*FLAGS)
    use(monkeypatch, sb)
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_ATTEMPTS", "2")  # a storm outlives 2 attempts fast
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_CONCURRENCY", "1")
    sb.control_post("faults", json={"error_rate": 1.0})
    assets = load_module().make_assets(max_retries=1, retry_seconds=0.5)
    instance = DagsterInstance.ephemeral()
    result = materialize([assets], raise_on_error=False, instance=instance)
    assert not result.success  # the storm outlived the one retry
    retried = events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retried) == 1
    error = retried[0].event_specific_data.error
    assert "still failing after 2 attempts (last: HTTP 500 " in error.message
    assert "/v1/" in error.message and error.cause is not None
    assert "still failing" in error.cause.message  # the Failure Dagster keeps as the cause
    assert not [f for f in error.stack if "/connector/" in f]  # no frame of the connector
    lines = messages(instance, result.run_id)
    cause = next(i for i, m in enumerate(lines) if "retrying in 0.5 s" in m)
    asked = next(i for i, m in enumerate(lines) if "requested a retry" in m)
    assert cause < asked and "HTTP 500" in lines[cause]
    # The connector's own retry lines reach the Dagster log, not only stderr.
    assert any(m.startswith("retry 2/2 of http") and "after HTTP 500" in m for m in lines)
    failure = events(result, DagsterEventType.STEP_FAILURE)[0].event_specific_data
    assert "HTTP 500" in failure.user_failure_data.description
    assert "HTTP 500" in failure.user_failure_data.metadata["cause"].value


def test_short_stop_is_retried_and_the_retry_completes(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 requests, 3 per 6 s window: the fourth must wait (a stop, then a retry) even on a slow
    # machine where three requests take seconds.
    sb = sandbox_factory(*FLAGS, "--window-seconds", 6, "--window-limit", 3)
    use(monkeypatch, sb)
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_WAIT_SECONDS", "0.2")  # stop, do not sleep
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_CONCURRENCY", "1")  # the sequential walk
    result = materialize([load_module().make_assets(retry_cap_seconds=30)])
    assert result.success
    assert len(events(result, DagsterEventType.STEP_UP_FOR_RETRY)) >= 1
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(120, 120)]
    # Every materialisation records what it loaded: the stopped attempt's rows included.
    loaded = [
        m.materialization.metadata["rows_loaded"].value
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key == AssetKey(["ciklek", "orders"])
    ]
    assert sum(loaded) == 120 and len(loaded) >= 2
    assert all(m["complete"] for m in metadata(result).values())  # the last attempt's


def test_daily_quota_materialises_partial_and_sync_complete_names_the_limit(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = sandbox_factory(*FLAGS)
    use(monkeypatch, sb)
    # Two requests a day, spent in the sequential order this test pins (orders first).
    monkeypatch.setenv("SOURCES__CIKLEK__MAX_CONCURRENCY", "1")
    sb.control_post("limits", json={"daily_quota": 2})
    # A small cap: the quota's reset (00:00 UTC) is always further, even a minute before it.
    assets = load_module().make_assets(retry_cap_seconds=5)
    result = materialize([assets])
    assert result.success  # a failed check is not a failed run
    assert events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    meta = metadata(result)
    assert (
        meta["ciklek/orders"]["rows_loaded"] == 100 and meta["ciklek/orders"]["complete"] is False
    )
    assert meta["ciklek/orders"]["resume_at"].endswith("00:00:00Z")
    assert meta["ciklek/orders"]["stopped_by"] == "api_quota"
    complete = checks(result)[("ciklek/orders", "sync_complete")]
    assert not complete.passed and complete.severity == AssetCheckSeverity.WARN
    resume = meta["ciklek/orders"]["resume_at"]
    assert "the API's quota for this key" in complete.description
    assert "daily quota exhausted" in complete.description and resume in complete.description
    facts = {k: v.value for k, v in complete.metadata.items()}
    assert facts["stopped_by"] == "api_quota"
    # The API's allowance and the connector's own budget: two keys, two different numbers.
    assert facts["api_ratelimit_remaining"] == 0
    assert facts["own_budget_left_today"] == facts["own_daily_budget"] - 3 > 0
    assert observed(result)["ciklek_api"]["api_ratelimit_remaining"] == 0
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*) from ciklek.orders") == [(100,)]

    # Evaluated on its own, the same check reads the run log: the stop and why.
    only = materialize([assets], selection=AssetSelection.all_asset_checks())
    recorded = checks(only)[("ciklek/orders", "sync_complete")]
    assert not recorded.passed and "stopped_try_later" in recorded.description
    assert "daily quota exhausted" in recorded.description

    sb.control_post("new_day")
    sb.control_post("limits", json={"daily_quota": 1000})
    _REGISTRY.clear()
    after = materialize([assets])
    assert after.success and all(m["complete"] for m in metadata(after).values())
    assert all(c.passed for c in checks(after).values())
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(120, 120)]
    expected = query(db, "select count(*) from ciklek.order_line_items")
    assert query(db, "select count(distinct id) from ciklek.order_line_items") == expected


def test_accounts_are_partitions_with_their_own_keys_datasets_and_checks(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acme, bolt = "bsk_test_acme_key", "bsk_test_bolt_key"
    sb = sandbox_factory(*FLAGS, "--key", f"{acme}=orders:read", "--key", f"{bolt}=orders:read")
    use(monkeypatch, sb, key="bsk_test_unscoped_other_account")
    monkeypatch.setenv("SOURCES__CIKLEK__ACCOUNTS", "acme,bolt")
    monkeypatch.setenv("ACME__SOURCES__CIKLEK__API_KEY", acme)
    assets = load_module().make_assets()  # partitions from the `accounts` setting
    assert assets.partitions_def is not None
    assert assets.partitions_def.get_partition_keys() == ["acme", "bolt"]

    ok = materialize([assets], partition_key="acme")
    assert ok.success
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*) from ciklek_acme.orders") == [(120,)]
    meta = metadata(ok)["ciklek/orders"]
    assert meta["dagster/table_name"] == "duckdb.ciklek_acme.orders"
    assert meta["dagster/partition_row_count"] == meta["dagster/row_count"] == 120
    # Checks name their partition (the UI's "Partition" column), the run's figures too.
    evaluations = events(ok, DagsterEventType.ASSET_CHECK_EVALUATION)
    partitions = {e.event_specific_data.partition for e in evaluations}
    assert partitions == {"acme"}
    assert {e.partition for e in events(ok, DagsterEventType.ASSET_OBSERVATION)} == {"acme"}
    # customers and products: the account's key lacks their scope, so they are skipped, and
    # `sync_complete` says so rather than going missing.
    skipped = checks(ok)[("ciklek/customers", "sync_complete")]
    assert not skipped.passed and "lacks scope customers:read" in skipped.description
    counted = sb.stats()["counted_today"]
    assert counted.get(SandboxProcess.fingerprint(acme), 0) >= 1
    assert SandboxProcess.fingerprint("bsk_test_unscoped_other_account") not in counted
    # Checks alone, for one account: its dataset and run log, no request.
    sb.control_post("reset_stats")
    acme_only = {"dagster/partition": "acme"}
    only = materialize([assets], selection=AssetSelection.all_asset_checks(), tags=acme_only)
    assert only.success and sb.stats()["requests"] == 0
    reconciled = checks(only)[("ciklek/orders", "reconciled")]
    assert reconciled.partition == "acme" and reconciled.metadata["table_rows"].value == 120
    assert checks(only)[("ciklek/orders", "sync_complete")].passed
    unsaid = materialize(
        [assets], selection=AssetSelection.all_asset_checks(), raise_on_error=False
    )
    failure = events(unsaid, DagsterEventType.STEP_FAILURE)[0].event_specific_data
    assert "launch the run for an account (one of acme, bolt)" in failure.error.message

    missing = materialize([assets], partition_key="bolt", raise_on_error=False)
    assert not missing.success
    text = str(events(missing, DagsterEventType.STEP_FAILURE)[0].event_specific_data.error)
    assert "BOLT__SOURCES__CIKLEK__API_KEY" in text

    monkeypatch.setenv("BOLT__SOURCES__CIKLEK__API_KEY", bolt)
    assert materialize([assets], partition_key="bolt").success
    assert query(db, "select count(*) from ciklek_bolt.orders") == [(120,)]
    assert sb.stats()["counted_today"].get(SandboxProcess.fingerprint(bolt), 0) >= 1


def _dagster(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    dagster = str(Path(sys.executable).parent / "dagster")
    return subprocess.run(
        [dagster, *args, "-f", str(DEFINITIONS)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_dagster_cli_exit_code_follows_the_sync(
    sandbox_factory: Callable[..., SandboxProcess], clean_env: Path
) -> None:
    sb = sandbox_factory(*FLAGS)
    env = dict(os.environ)
    env.update(
        SOURCES__CIKLEK__BASE_URL=sb.url,
        SOURCES__CIKLEK__API_KEY="bsk_test_revoked_cli",
        SOURCES__CIKLEK__PAGE_SIZE="50",
        DAGSTER_HOME=str(clean_env / "dagster_home"),
    )
    (clean_env / "dagster_home").mkdir()
    select = ["asset", "materialize", "--select", "*"]
    # The refusal's run executes its step in the CLI's process (run config, no step process):
    # the exit code is the CLI's reading of the run's failure whatever the executor; the valid
    # run below keeps the default executor, a step process loading the file by `-f`.
    in_process = ["--config-json", '{"execution": {"config": {"in_process": {}}}}']
    refused = _dagster([*select, *in_process], env, clean_env)
    assert refused.returncode != 0, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "bsk_test_revoked_cli" not in refused.stdout + refused.stderr

    env["SOURCES__CIKLEK__API_KEY"] = sb.key
    valid = _dagster(select, env, clean_env)
    assert valid.returncode == 0, valid.stdout[-2000:] + valid.stderr[-2000:]
    db = clean_env / DEFAULT_DB
    for table, count in (("orders", 120), ("customers", 30), ("products", 15)):
        assert query(db, f"select count(*) from ciklek.{table}") == [(count,)]
    assert query(db, "select count(*) > 120 from ciklek.order_line_items") == [(True,)]


@pytest.mark.postgres
def test_on_postgres_the_columns_are_typed_as_postgres_has_them_and_checks_read_it(
    sandbox_factory: Callable[..., SandboxProcess],
    pg_schema: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg2

    dsn, schema = pg_schema
    sb = sandbox_factory("--orders", 30, "--customers", 10, "--products", 5)
    use(monkeypatch, sb)
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", dsn)
    assets = load_module().make_assets(destination="postgres", dataset=schema)
    result = materialize([assets])
    assert result.success
    orders = metadata(result)["ciklek/orders"]
    assert orders["dagster/table_name"] == f"postgres.{schema}.orders"
    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute(f'select count(*) from "{schema}".orders')
        assert orders["dagster/row_count"] == cur.fetchone()[0] == 30
        cur.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = %s and table_name = 'orders'",
            (schema,),
        )
        in_postgres = dict(cur.fetchall())
    columns = {c.name: c.type for c in orders["dagster/column_schema"].columns}
    assert set(columns) == set(in_postgres)
    assert columns["total"].startswith("numeric") and in_postgres["total"] == "numeric"
    assert columns["updated_at"] == in_postgres["updated_at"] == "timestamp with time zone"
    sb.control_post("reset_stats")
    only = materialize([assets], selection=AssetSelection.all_asset_checks())
    assert only.success and sb.stats()["requests"] == 0
    assert checks(only)[("ciklek/orders", "reconciled")].metadata["table_rows"].value == 30
    assert checks(only)[("ciklek/orders", "sync_complete")].passed
