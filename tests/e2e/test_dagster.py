"""Dagster assets on `run_sync`, against the real sandbox: metadata per table, failures that do
not retry, a short stop retried to completion, a daily-quota stop materialised as partial with a
failing completeness check, and one partition per account with its own key and dataset."""

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
from dagster import AssetCheckSeverity, DagsterEventType, materialize

DEFINITIONS = REPO_ROOT / "pipelines" / "dagster_definitions.py"
TABLES = {"ciklek/orders", "ciklek/order_line_items", "ciklek/customers", "ciklek/products"}
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


def checks(result: Any) -> dict[tuple[str, str], Any]:
    found = {}
    for event in events(result, DagsterEventType.ASSET_CHECK_EVALUATION):
        data = event.event_specific_data
        found[(data.asset_key.to_user_string(), data.check_name)] = data
    return found


def test_materialise_every_table_with_metadata_then_incrementally(
    sandbox_factory: Callable[..., SandboxProcess],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = sandbox_factory(*FLAGS)
    use(monkeypatch, sb)
    module = load_module()
    assets = module.make_assets()
    result = materialize([assets])
    assert result.success
    meta = metadata(result)
    assert set(meta) == TABLES
    assert meta["ciklek/orders"]["rows"] == 120 and meta["ciklek/orders"]["complete"] is True
    assert meta["ciklek/customers"]["rows"] == 30 and meta["ciklek/products"]["rows"] == 15
    assert meta["ciklek/order_line_items"]["rows"] > 120
    assert meta["ciklek/orders"]["requests"] == 5  # 3 order pages, 1 customers, 1 products
    assert meta["ciklek/orders"]["watermark"]
    assert {"429s", "quota_left"} <= set(meta["ciklek/orders"])
    evaluated = checks(result)
    assert all(c.passed for c in evaluated.values())
    assert ("ciklek/orders", "reconciled") in evaluated
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*) from ciklek.orders") == [(120,)]
    # The same run log as `ciklek sync`: a row in _ciklek_sync_runs under the Dagster pipeline.
    assert query(db, "select pipeline, outcome from ciklek._ciklek_sync_runs") == [
        ("ciklek_dagster", "completed")
    ]

    sb.control_post("mutate", update=2, create=3, resource="orders")
    sb.control_post("reset_stats")
    again = materialize([assets])
    assert again.success
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(123, 123)]
    assert sb.stats()["by_path"] == {"/v1/orders": 1, "/v1/customers": 1, "/v1/products": 1}
    assert query(db, "select count(*) from ciklek.customers") == [(30,)]
    assert query(db, "select count(*) from ciklek.products") == [(15,)]
    # The module-level Definitions dagster loads: the assets and the sweep job on their pipeline.
    sweep_job = module.defs.get_job_def("ciklek_sweep_job")
    assert [n.name for n in sweep_job.nodes] == ["ciklek_sweep"]
    assert not module.make_definitions(accounts=["acme"]).jobs  # partitioned: no shared job

    # A subset: only the selected tables' resources are synced and materialised.
    sb.control_post("reset_stats")
    subset = materialize([assets], selection=["ciklek/customers"])
    assert subset.success and set(metadata(subset)) == {"ciklek/customers"}
    assert sb.stats()["by_path"] == {"/v1/customers": 1}


def test_refused_key_fails_without_retry(
    sandbox_factory: Callable[..., SandboxProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox_factory(*FLAGS)
    use(monkeypatch, sb, key="bsk_test_revoked_dagster")
    result = materialize([load_module().make_assets()], raise_on_error=False)
    assert not result.success
    assert events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    failure = events(result, DagsterEventType.STEP_FAILURE)[0]
    text = str(failure.event_specific_data.error)
    assert "401" in text and "bsk_test_revoked_dagster" not in text
    assert sb.stats()["requests"] <= 3  # one refusal per resource at most, no retry


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
    assert all(m["complete"] for m in metadata(result).values())
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(120, 120)]


def test_daily_quota_materialises_partial_then_next_run_completes(
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
    assert meta["ciklek/orders"]["rows"] == 100 and meta["ciklek/orders"]["complete"] is False
    assert meta["ciklek/orders"]["resume_at"].endswith("00:00:00Z")
    complete = checks(result)[("ciklek/orders", "sync_complete")]
    assert not complete.passed and complete.severity == AssetCheckSeverity.WARN
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*) from ciklek.orders") == [(100,)]

    sb.control_post("new_day")
    sb.control_post("limits", json={"daily_quota": 1000})
    _REGISTRY.clear()
    after = materialize([assets])
    assert after.success and all(m["complete"] for m in metadata(after).values())
    assert all(c.passed for c in checks(after).values())
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(120, 120)]
    expected = query(db, "select count(*) from ciklek.order_line_items")
    assert query(db, "select count(distinct id) from ciklek.order_line_items") == expected


def test_accounts_are_partitions_with_their_own_keys_and_datasets(
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
    counted = sb.stats()["counted_today"]
    assert counted.get(SandboxProcess.fingerprint(acme), 0) >= 1
    assert SandboxProcess.fingerprint("bsk_test_unscoped_other_account") not in counted

    missing = materialize([assets], partition_key="bolt", raise_on_error=False)
    assert not missing.success
    text = str(events(missing, DagsterEventType.STEP_FAILURE)[0].event_specific_data.error)
    assert "BOLT__SOURCES__CIKLEK__API_KEY" in text

    monkeypatch.setenv("BOLT__SOURCES__CIKLEK__API_KEY", bolt)
    assert materialize([assets], partition_key="bolt").success
    assert query(db, "select count(*) from ciklek_bolt.orders") == [(120,)]
    assert sb.stats()["counted_today"].get(SandboxProcess.fingerprint(bolt), 0) >= 1


def _dagster_cli(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    dagster = str(Path(sys.executable).parent / "dagster")
    return subprocess.run(
        [dagster, "asset", "materialize", "-f", str(DEFINITIONS), "--select", "*"],
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
    refused = _dagster_cli(env, clean_env)
    assert refused.returncode != 0, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "bsk_test_revoked_cli" not in refused.stdout + refused.stderr

    env["SOURCES__CIKLEK__API_KEY"] = sb.key
    valid = _dagster_cli(env, clean_env)
    assert valid.returncode == 0, valid.stdout[-2000:] + valid.stderr[-2000:]
    db = clean_env / DEFAULT_DB
    for table, count in (("orders", 120), ("customers", 30), ("products", 15)):
        assert query(db, f"select count(*) from ciklek.{table}") == [(count,)]
    assert query(db, "select count(*) > 120 from ciklek.order_line_items") == [(True,)]
