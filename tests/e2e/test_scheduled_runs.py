"""Scheduled runs tell the truth: the Python API's outcome, fresh runners keep the daily budget,
`status --max-age`, accounts' scoped keys through the CLI, athena refused before any client."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from connector import (
    QuotaExhausted,
    RejectsFound,
    SyncOptions,
    Unauthorized,
    run_sync,
)
from connector.api.limiter import _REGISTRY
from tests.helpers import DEFAULT_DB, query, run_cli, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import set_env

FLAGS = ("--orders", 120, "--customers", 20, "--products", 10, "--window-limit", 100_000)


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxProcess]:
    """The tests on `sb` only read from it (syncs, request counts): one for the module."""
    with SandboxProcess(*[str(flag) for flag in FLAGS]) as sandbox:
        yield sandbox


@pytest.fixture
def sb(shared_sandbox: SandboxProcess) -> SandboxProcess:
    shared_sandbox.control_post("reset_stats")
    return shared_sandbox


def env_for(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    return sync_env(
        sb,
        SOURCES__CIKLEK__PAGE_SIZE="20",
        SOURCES__CIKLEK__REQUESTS_PER_MINUTE="100000",
        **extra,
    )


def test_public_api_imports_in_a_fresh_interpreter() -> None:
    code = (
        "from connector import ciklek_source, run_sync, SyncOptions, SyncResult, "
        "CiklekError, Unauthorized, QuotaExhausted, RejectsFound; "
        "print(callable(SyncResult.raise_for_outcome))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_raise_for_outcome_raises_the_typed_error(
    sandbox_factory: Callable[..., SandboxProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox_factory(*FLAGS, "--bad-records", 0.1)
    set_env(monkeypatch, env_for(sb, SOURCES__CIKLEK__API_KEY="bsk_test_refused_api"))
    _REGISTRY.clear()
    refused = run_sync(SyncOptions(resources=["products"]))
    assert refused.exit_code == 3
    with pytest.raises(Unauthorized):
        refused.raise_for_outcome()

    set_env(monkeypatch, env_for(sb))
    strict = run_sync(SyncOptions(resources=["orders"], strict=True))
    assert strict.exit_code == 4
    with pytest.raises(RejectsFound) as info:
        strict.raise_for_outcome()
    assert info.value.count == strict.report.outcome("orders").rejects > 0

    clean = run_sync(SyncOptions(resources=["products"]))
    assert clean.exit_code == 0 and clean.error is None
    clean.raise_for_outcome()  # nothing to raise

    sb.control_post("limits", json={"daily_quota": 1})
    sb.control_post("mutate", update=0, create=60, resource="customers")
    stopped = run_sync(SyncOptions(resources=["customers"]))
    assert stopped.exit_code == 75
    with pytest.raises(QuotaExhausted) as quota:
        stopped.raise_for_outcome()
    assert quota.value.resume_at == stopped.resume_at is not None
    _REGISTRY.clear()


def test_wiped_state_dir_keeps_the_daily_budget(sb: SandboxProcess, clean_env: Path) -> None:
    env = env_for(sb, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="5")
    first = run_main("sync", "--resources", "orders", "--max-requests", "4", env=env, cwd=clean_env)
    assert first.returncode == 75, first.stdout + first.stderr
    shutil.rmtree(env["CIKLEK_HOME"])  # a fresh runner: no ledger, no status, no dlt state

    second = run_main("sync", "--resources", "orders", env=env, cwd=clean_env)
    # 4 requests today per _ciklek_sync_runs: one left of 5, then the budget stops the run.
    assert second.returncode == 75, second.stdout + second.stderr
    assert "daily request budget 5 reached" in second.stdout + second.stderr
    assert sb.stats()["requests"] == 5
    db = clean_env / DEFAULT_DB
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(100, 100)]


def test_status_max_age(sb: SandboxProcess, clean_env: Path) -> None:
    env = env_for(sb)
    none = run_main("status", "--max-age", "6h", env=env, cwd=clean_env)
    assert none.returncode == 5 and "no complete sync" in none.stderr

    partial = run_main("sync", "--max-requests", "1", env=env, cwd=clean_env)
    assert partial.returncode == 75
    assert run_main("status", "--max-age", "6h", env=env, cwd=clean_env).returncode == 5

    assert run_main("sync", env=env, cwd=clean_env).returncode == 0
    fresh = run_main("status", "--max-age", "6h", env=env, cwd=clean_env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "fresh" in fresh.stdout

    # A later window does not count as a complete sync; the complete one still does.
    window = run_main("sync", "--since", "2020-01-01", env=env, cwd=clean_env)
    assert window.returncode == 0
    status_file = Path(env["CIKLEK_HOME"]) / "runs" / "ciklek" / "status.json"
    doc = json.loads(status_file.read_text())
    started = dt.datetime.fromisoformat(doc["last_complete_sync"]["started_at"])
    assert doc["last_run"]["kind"] == "window"
    assert run_main("status", "--max-age", "90s", env=env, cwd=clean_env).returncode == 0

    # Two days old: stale, with its age.
    doc["last_complete_sync"]["started_at"] = (started - dt.timedelta(days=2)).isoformat()
    status_file.write_text(json.dumps(doc))
    stale = run_main("status", "--max-age", "2d", env=env, cwd=clean_env)
    assert stale.returncode == 5 and "2d0h ago" in stale.stderr
    assert run_main("status", "--max-age", "3d", env=env, cwd=clean_env).returncode == 0
    bad = run_main("status", "--max-age", "6 hours", env=env, cwd=clean_env)
    assert bad.returncode == 2 and "--max-age" in bad.stderr


def test_status_max_age_from_the_warehouse_without_local_state(
    sb: SandboxProcess, clean_env: Path
) -> None:
    env = env_for(sb)
    remote_flags = ("--destination", "duckdb", "--dataset", "ciklek")
    never = run_main("status", "--max-age", "6h", *remote_flags, env=env, cwd=clean_env)
    assert never.returncode == 5, never.stdout + never.stderr
    assert not (clean_env / DEFAULT_DB).exists()  # reading created no warehouse file

    assert run_main("sync", env=env, cwd=clean_env).returncode == 0
    shutil.rmtree(env["CIKLEK_HOME"])
    sb.control_post("reset_stats")
    local_only = run_main("status", "--max-age", "6h", env=env, cwd=clean_env)
    assert local_only.returncode == 5
    remote = run_main("status", "--max-age", "6h", *remote_flags, env=env, cwd=clean_env)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "run log in the warehouse" in remote.stdout
    assert sb.stats()["requests"] == 0  # no Ciklek request

    with duckdb.connect(str(clean_env / DEFAULT_DB)):  # another process holds the file
        locked = run_cli(  # a process: the lock is another process's
            "status", "--max-age", "6h", "--destination", "duckdb", env=env, cwd=clean_env
        )
    assert locked.returncode == 75 and "locked" in locked.stderr, locked.stderr


def test_account_pipeline_uses_its_scoped_key_and_never_the_unscoped_one(
    sb: SandboxProcess, clean_env: Path
) -> None:
    env = env_for(sb, SOURCES__CIKLEK__API_KEY="bsk_test_not_this_account")
    env["ACME__SOURCES__CIKLEK__API_KEY"] = sb.key
    ok = run_main(
        "sync", "--pipeline", "acme", "--dataset", "ciklek_acme", env=env, cwd=clean_env
    )  # scoped wins over the unscoped key (which the sandbox would refuse)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert query(clean_env / DEFAULT_DB, "select count(*) from ciklek_acme.orders") == [(120,)]

    env["SOURCES__CIKLEK__ACCOUNTS"] = "acme,bolt"
    env["SOURCES__CIKLEK__API_KEY"] = sb.key  # a valid unscoped key is still not bolt's
    sb.control_post("reset_stats")
    missing = run_main("sync", "--pipeline", "bolt", env=env, cwd=clean_env)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "BOLT__SOURCES__CIKLEK__API_KEY" in missing.stderr
    assert sb.stats()["requests"] == 0
    # Commands that need no key still work for the account.
    assert run_main("status", "--pipeline", "bolt", env=env, cwd=clean_env).returncode == 0


def test_athena_without_iceberg_is_refused_before_anything(
    sb: SandboxProcess, clean_env: Path
) -> None:
    run = run_main("sync", "--destination", "athena", env=env_for(sb), cwd=clean_env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "DESTINATION__ATHENA__FORCE_ICEBERG=true" in run.stderr
    assert sb.stats()["requests"] == 0
