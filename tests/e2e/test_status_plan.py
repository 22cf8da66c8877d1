"""`ciklek status` (no network, safe during a sync) and `ciklek plan` (limit=1 requests)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    CHUNK_PAGES,
    ORDER_PAGES,
    SANDBOX_FLAGS,
    committed_pages,
    env_home,
    fast_env,
    requests_sent,
    run_sync_main,
    splits_in,
    start_sync,
    wait_for,
)


def status_json(env: dict[str, str]) -> dict:
    result = run_main("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_during_a_sync_shows_the_traversal_in_progress(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 150)
    env = fast_env(sb)
    log = tmp_path / "sync.log"
    proc = start_sync(env, "--resources", "orders", cwd=clean_env, log=log)
    try:
        wait_for(lambda: committed_pages(env_home(env)) >= CHUNK_PAGES, what="a committed chunk")
        during = status_json(env)
        text = run_main("status", env=env)
        # Read: the rest of the traversal need not be slow (the latency is a runtime setting).
        sb.control_post("faults", json={"latency_ms": 0})
    finally:
        assert proc.wait(timeout=60) == 0, log.read_text()
    assert during["running"] is True
    orders = during["resources"]["orders"]
    assert orders["watermark"] is None
    assert orders["traversal"]["kind"] == "full"
    assert CHUNK_PAGES <= orders["traversal"]["pages"] < ORDER_PAGES
    assert orders["traversal"]["total"] == 400
    # Pages of 20 (the last page of a range, when the traversal walks in ranges, is partial).
    splits = splits_in(log.read_text())
    assert (orders["traversal"]["pages"] - splits) * 20 <= orders["rows_loaded"]
    assert orders["rows_loaded"] <= orders["traversal"]["pages"] * 20
    assert during["requests_used_today"] >= orders["traversal"]["pages"]
    assert text.returncode == 0
    assert "sync running now: yes" in text.stdout
    assert re.search(r"full since the beginning, \d+ pages of ~400 records", text.stdout)

    after = status_json(env)
    assert after["running"] is False
    assert after["resources"]["orders"]["traversal"] is None
    assert after["resources"]["orders"]["rows_loaded"] == 400
    assert ORDER_PAGES <= after["requests_used_today"] <= ORDER_PAGES + splits + 1
    assert after["last_run"]["outcome"] == "completed"


def test_status_text_after_a_stopped_and_a_completed_run(sandbox_factory, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS)
    env = fast_env(sb, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="1000")
    assert (
        run_sync_main(env, "--resources", "orders", "--max-requests", "4", cwd=clean_env).returncode
        == 75
    )
    sb.stop()  # status needs no network
    stopped = run_main("status", env=env)
    assert stopped.returncode == 0, stopped.stderr
    out = stopped.stdout
    assert "full since the beginning, 4 pages of ~400 records" in out
    assert "sync running now: no" in out
    assert "requests used today (UTC): 4, 996 left of 1,000" in out
    assert "last run: stopped_try_later (exit 75)" in out
    assert "80 rows, 4 requests" in out
    assert "--max-requests 4 reached" in out


def test_plan_counts_requests_time_and_days(sandbox_factory, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS)
    env = fast_env(
        sb,
        SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="10",
        SOURCES__CIKLEK__REQUESTS_PER_MINUTE="120",
        SOURCES__CIKLEK__CHECKPOINT_PAGES="100",  # one commit a sync: chunks are not the point
    )
    before = run_main("plan", env=env)
    assert before.returncode == 0, before.stderr
    assert requests_sent(sb) == 3  # one limit=1 request per resource
    lines = {line.split()[1]: line.split() for line in before.stdout.splitlines() if "│" in line}
    # resource, records, next sync records, next requests, full requests, time, days
    assert lines["orders"][1:14:2] == ["orders", "400", "400", "20", "20", "0m10s", "2"]
    assert lines["customers"][1:14:2] == ["customers", "30", "30", "2", "2", "0m01s", "1"]
    assert lines["products"][1:14:2] == ["products", "20", "20", "1", "1", "0m00s", "1"]
    # 23 requests at 120/min is 11.5 s; at 10 requests a day, 3 days.
    assert (
        "next sync: 23 requests, about 0m12s at 120/min; full backfill: 23 requests, about "
        "0m12s, 3 day(s) at a daily budget of 10"
    ) in before.stdout

    roomy = dict(env, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="1000")
    synced = run_sync_main(roomy, cwd=clean_env)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    sent = requests_sent(sb)
    unchanged = run_sync_main(
        dict(env, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="1000"), cwd=clean_env
    )
    assert unchanged.returncode == 0
    assert requests_sent(sb) - sent == 3  # nothing new: one request per resource
    sent = requests_sent(sb)
    # plan's own requests count against the daily budget like a sync's: 10 are spent now.
    refused = run_main("plan", env=env)
    assert refused.returncode == 75 and "daily request budget 10 reached" in refused.stderr
    assert requests_sent(sb) == sent
    after = run_main("plan", env=dict(env, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="1000"))
    assert after.returncode == 0, after.stderr
    assert requests_sent(sb) - sent == 6  # total, then records since the watermark
    assert "next sync: 3 requests" in after.stdout
    assert "full backfill: 23 requests" in after.stdout
