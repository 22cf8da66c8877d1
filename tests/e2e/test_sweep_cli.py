"""`ciklek sweep` as a process: killed with SIGKILL half-way and run again, it marks the same
rows and re-spends at most one chunk; `status` and `plan` show the sweep."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import CIKLEK_BIN, DEFAULT_DB, query
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    CHUNK_PAGES,
    api_records,
    env_home,
    fast_env,
    read_status,
    requests_after_kill,
    requests_sent,
    splits_in,
    wait_for,
)

ORDERS = ("--resources", "orders")
PAGES = 10  # 200 orders - 5 deleted, 20 per page


def sweep_pages(home: Path) -> int:
    """Pages of the sweep in progress that a committed chunk covers (status.json)."""
    doc = read_status(home) or {}
    trav = (doc.get("resources") or {}).get("orders", {}).get("sweep") or {}
    return int(trav.get("pages") or 0)


def test_sigkill_mid_sweep_then_rerun_marks_the_same_rows(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(
        "--orders", 200, "--customers", 10, "--products", 5, "--window-limit", 1_000_000,
        "--latency-ms", 60,
    )  # fmt: skip
    env = fast_env(sb)
    home, db = env_home(env), clean_env / DEFAULT_DB
    assert run_main("sync", *ORDERS, env=env, cwd=clean_env).returncode == 0
    gone = sorted(api_records(sb))[50:55]
    for rid in gone:
        sb.control_request("DELETE", f"records/orders/{rid}")
    before = requests_sent(sb)

    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        [CIKLEK_BIN, "sweep", *ORDERS], env=env, cwd=clean_env, stdout=log, stderr=log
    )
    wait_for(lambda: sweep_pages(home) >= CHUNK_PAGES, what="a committed sweep chunk")
    seen = sweep_pages(home)
    wait_for(lambda: requests_sent(sb) >= before + seen + 2, what="the next chunk's pages")
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    killed = requests_after_kill(sb) - before
    seen = sweep_pages(home)  # what the killed run committed (a later chunk may have made it)
    assert killed < PAGES, "the sweep finished before it could be killed"
    assert query(db, "select count(*) from ciklek.orders where _ciklek_deleted_at is not null") == [
        (0,)
    ]

    status = run_main("status", env=env, cwd=clean_env)
    assert status.returncode == 0
    assert "sweep orders: in progress since" in status.stdout
    assert f"{sweep_pages(home)} pages" in status.stdout  # what the committed chunks covered

    sb.control_post("faults", json={"latency_ms": 0})  # the rerun's pace is not the point
    rerun = run_main("sweep", *ORDERS, env=env, cwd=clean_env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rerun_requests = requests_sent(sb) - before - killed
    # Resumed from the last committed chunk, plus what ranges cost and the end of a sweep in
    # ranges (the open range's last look, the whole list's meta.total). A split costs up to two
    # requests on a resume: the closed range's last page reaches into the next range, and the
    # rest of the list, cut in two, can take one page more than in one piece (seen: 11 = 7
    # pages of rows + 2 for the split + 2 for the end).
    slack = 2 * splits_in((tmp_path / "killed.log").read_text(), rerun.stderr) + 2
    assert rerun_requests <= PAGES - seen + slack, (
        f"rerun sent {rerun_requests} (killed run {killed}, seen {seen}, slack {slack})\n"
        f"--- killed run\n{(tmp_path / 'killed.log').read_text()[-4000:]}\n"
        f"--- rerun\n{rerun.stderr[-4000:]}"
    )
    rows = query(db, "select id from ciklek.orders where _ciklek_deleted_at is not null")
    assert {r[0] for r in rows} == set(gone)
    items = query(
        db,
        "select distinct order_id from ciklek.order_line_items "
        "where _ciklek_deleted_at is not null",
    )
    assert {r[0] for r in items} == set(gone)

    status = run_main("status", env=env, cwd=clean_env)
    assert "last sweep orders: completed" in status.stdout
    assert "5 row(s) marked deleted" in status.stdout
    assert "sweep orders: in progress" not in status.stdout
    plan = run_main("plan", *ORDERS, env=env, cwd=clean_env)
    assert plan.returncode == 0, plan.stderr
    assert f"sweep orders: {PAGES} requests, 1 day(s)" in plan.stdout
