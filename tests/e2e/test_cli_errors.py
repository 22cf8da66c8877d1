"""`ciklek sync` when things go wrong: exit codes, one-line messages, and secret hygiene.

Every run here uses a sentinel key; after each one, its stdout, stderr and every file it left
under CIKLEK_HOME and next to the DuckDB file are scanned (as bytes) for that key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import Result, run_main
from tests.quick_retries import short_backoff
from tests.sandbox_proc import SandboxProcess

SENTINEL = "bsk_live_SENTINEL_9f8e7d"
ALL_READ = "orders:read,customers:read,products:read"
SMALL = ("--orders", 40, "--customers", 12, "--products", 8)
KEY_SETTING = "SOURCES__CIKLEK__API_KEY"


def assert_no_secret(run: Result, *dirs: Path) -> None:
    """The key is in no output and in no file under `dirs` (CIKLEK_HOME, the DuckDB dir)."""
    assert SENTINEL not in run.stdout
    assert SENTINEL not in run.stderr
    needle = SENTINEL.encode()
    for root in dirs:
        for path in root.rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), f"the key leaked into {path}"


def cli(sb: SandboxProcess, *args: str, key: str = SENTINEL, **env: str) -> Any:
    return run_main(*args, env=sync_env(sb, key=key, **env))


def home() -> Path:
    return Path(os.environ["CIKLEK_HOME"])


def test_refused_key_exits_3_with_one_line_naming_401_and_the_setting(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = sandbox_factory(*SMALL)  # knows only its default key, not the sentinel
    # One resource after the other: the request count below is the sequential walk's (with
    # resources at once, each sends its first request before the 401 halts the others).
    run = cli(sb, "sync", SOURCES__CIKLEK__MAX_CONCURRENCY="1")
    assert run.returncode == 3, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "401" in lines[0] and KEY_SETTING in lines[0]
    assert "Traceback" not in run.stdout + run.stderr
    # The first 401 stops every resource: one request, not one per resource.
    assert sb.stats()["by_status"] == {"401": 1}
    assert_no_secret(run, home(), clean_env)

    debug = cli(sb, "sync", "--debug")
    assert debug.returncode == 3
    assert "401" in debug.stderr and KEY_SETTING in debug.stderr
    assert_no_secret(debug, home(), clean_env)


def test_unnamed_resources_without_scope_are_skipped_and_named_ones_exit_3(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = sandbox_factory(*SMALL, "--key", f"{SENTINEL}=orders:read")
    run = cli(sb, "sync")
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("customers", "products"):
        row = next(line for line in run.stdout.splitlines() if f" {name} " in line)
        assert "skipped" in row and f"{name}:read" in row
    orders_row = next(line for line in run.stdout.splitlines() if " orders " in line)
    assert "complete" in orders_row
    assert query(clean_env / DEFAULT_DB, "select count(*) from ciklek.orders") == [(40,)]
    assert_no_secret(run, home(), clean_env)

    named = cli(sb, "sync", "--resources", "customers")
    assert named.returncode == 3, named.stdout + named.stderr
    out = named.stdout + named.stderr
    assert "customers:read" in out and "403" in out
    assert "Traceback" not in out
    assert_no_secret(named, home(), clean_env)


def test_transient_failures_outliving_retries_exit_75_and_keep_progress(
    sandbox_factory: Any, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_backoff(monkeypatch)  # the attempts and the exit code are the point, not the wait
    sb = sandbox_factory(*SMALL, "--key", f"{SENTINEL}={ALL_READ}", "--error-rate", 1)
    run = cli(sb, "sync", "--resources", "orders", SOURCES__CIKLEK__MAX_ATTEMPTS="2")
    assert run.returncode == 75, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "progress is kept" in out
    assert "still failing after 2 attempts" in out and "500" in out
    assert "Traceback" not in out
    assert sb.stats()["by_status"] == {"500": 2}  # two attempts, no more
    assert any(p.is_file() for p in home().rglob("*"))  # the scan below reads real state files
    assert_no_secret(run, home(), clean_env)

    debug = cli(sb, "sync", "--debug", "--resources", "orders", SOURCES__CIKLEK__MAX_ATTEMPTS="2")
    assert debug.returncode == 75
    assert_no_secret(debug, home(), clean_env)


def test_daily_quota_exhausted_exits_75_without_waiting_for_midnight(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = sandbox_factory(*SMALL, "--key", f"{SENTINEL}={ALL_READ}", "--daily-quota", 2)
    # One resource after the other: the 2 requests go to orders (the order is what is pinned).
    run = cli(sb, "sync", SOURCES__CIKLEK__PAGE_SIZE="10", SOURCES__CIKLEK__MAX_CONCURRENCY="1")
    assert run.returncode == 75, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "daily quota exhausted" in out and "resume after" in out
    assert "progress is kept" in out
    # Two pages loaded, one refused request; the other resources send nothing more.
    assert sb.stats()["by_status"] == {"200": 2, "429": 1}
    assert query(clean_env / DEFAULT_DB, "select count(*) from ciklek.orders") == [(20,)]
    assert_no_secret(run, home(), clean_env)

    debug = cli(sb, "sync", "--debug", SOURCES__CIKLEK__PAGE_SIZE="10")
    assert debug.returncode == 75
    assert_no_secret(debug, home(), clean_env)


def test_bad_input_never_shows_the_key(sandbox_factory: Any, clean_env: Path) -> None:
    sb = sandbox_factory(*SMALL, "--key", f"{SENTINEL}={ALL_READ}")
    runs = [
        cli(sb, "sync", "--bogus-flag"),
        cli(sb, "sync", "--page-size", "0"),
        cli(sb, "sync", "--resources", "invoices", "--debug"),
        cli(sb, "sync", "--debug", SOURCES__CIKLEK__BASE_URL="http://api.example.test/v1"),
        cli(sb, "check", "--debug", SOURCES__CIKLEK__BASE_URL=f"{sb.url}/nowhere"),
    ]
    assert [r.returncode for r in runs[:4]] == [2, 2, 2, 2]
    assert runs[4].returncode != 0
    assert sb.stats()["requests"] == 1  # only `check` reached the server
    for run in runs:
        assert_no_secret(run, home(), clean_env)
