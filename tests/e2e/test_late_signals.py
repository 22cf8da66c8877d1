"""A signal that lands after a run decided its exit code changes nothing (issue 21, item 2).

A scheduler's SIGTERM (a timeout, a deploy) may arrive while a run that already decided how it
ended writes its run row, publishes the read copy, prints its summary or shuts the interpreter
down. Each test here sends SIGTERM every few milliseconds from the moment the run's last request
reached the sandbox until the process is gone, so every one of those phases gets signals: the
process must still exit with the code the run decided, and its run row must say the same. Real
processes: a signal and a process's exit are the point.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import REPO_ROOT, SandboxProcess
from tests.syncutil import (
    ORDER_PAGES,
    SANDBOX_FLAGS,
    assert_orders_match_api,
    fast_env,
    requests_sent,
    start_sync,
    wait_for,
)

ORDERS = ("--resources", "orders")


def _term_until_exit(proc: subprocess.Popen[str]) -> int:
    """SIGTERM every 5 ms until the process has exited; its exit code (negative: by a signal)."""
    while proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(0.005)
    return proc.wait(timeout=60)


def _run_row(db: Path) -> list[tuple[object, ...]]:
    """The run rows; none when the table is missing (the assertion then shows the run's log)."""
    try:
        return query(db, "select exit_code, outcome from ciklek._ciklek_sync_runs")
    except duckdb.CatalogException:
        return []


def test_sigterm_after_the_last_page_keeps_a_completed_run_at_exit_0(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 20)
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="1", SOURCES__CIKLEK__CHECKPOINT_PAGES="10")
    log = tmp_path / "sync.log"
    proc = start_sync(env, *ORDERS, cwd=clean_env, log=log)
    # The last page is asked for: the walk completes whatever comes next, so the run decides 0;
    # the signals land in the last load, the run row's load, the summary and the shutdown.
    wait_for(lambda: requests_sent(sb) >= ORDER_PAGES, 120, "the last page")
    code = _term_until_exit(proc)
    assert code == 0, log.read_text()
    assert "ciklek sync summary" in log.read_text()
    db = clean_env / DEFAULT_DB
    assert _run_row(db) == [(0, "completed")], log.read_text()
    assert_orders_match_api(db, sb)


@pytest.mark.parametrize("command", ["ciklek", "cron script"])
def test_sigterm_after_a_stop_was_decided_keeps_exit_75_and_its_run_row(
    sandbox_factory, clean_env: Path, tmp_path: Path, command: str
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 20)
    read_copy = tmp_path / "read-copy.duckdb"
    env = fast_env(sb, SOURCES__CIKLEK__DUCKDB_READ_COPY=str(read_copy))
    log = tmp_path / "sync.log"
    args = (*ORDERS, "--max-requests", "1")
    if command == "ciklek":
        proc = start_sync(env, *args, cwd=clean_env, log=log)
    else:
        script = REPO_ROOT / "pipelines" / "ciklek_pipeline.py"
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            env=env,
            cwd=clean_env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )
    # Its one request is sent: the run stops (at --max-requests, or by the first signal if that
    # lands before the next page is asked for) and decides 75 whatever comes after.
    wait_for(lambda: requests_sent(sb) >= 1, 120, "the run's one request")
    code = _term_until_exit(proc)
    assert code == 75, log.read_text()
    assert "progress is kept" in log.read_text()
    assert _run_row(clean_env / DEFAULT_DB) == [(75, "stopped_try_later")], log.read_text()
    assert query(read_copy, "select count(*) from ciklek.orders") == [(20,)]  # published
