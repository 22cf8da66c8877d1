"""What users schedule: the cron script (a subprocess) and the Dagster assets (in-process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


# The Dagster assets are tested in tests/e2e/test_dagster.py.


def test_cron_script_documents_exit_codes_and_a_crontab_line() -> None:
    doc = (PIPELINES / "ciklek_pipeline.py").read_text()
    for code in ("0 ", "75 ", "2 ", "3 ", "4 ", "1 "):
        assert f"\n    {code}" in doc
    assert "* * * *" in doc
    assert os.access(PIPELINES / "ciklek_pipeline.py", os.R_OK)
