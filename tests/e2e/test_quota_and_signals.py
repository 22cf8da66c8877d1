"""Stops that must keep progress: SIGKILL, SIGTERM, the daily quota, budgets, the run lock,
and an interrupted --full-refresh. The `ciklek` CLI runs as a real process against the sandbox;
`--latency-ms` makes a sync slow enough to be interrupted mid-way, and status.json (written
after every committed chunk) tells the test how far the committed work reached.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import time
from pathlib import Path

from tests.e2e.test_concurrency import reference_env, set_latency
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    CHUNK_PAGES,
    ORDER_PAGES,
    PAGE,
    SANDBOX_FLAGS,
    api_records,
    assert_orders_match_api,
    committed_pages,
    env_home,
    fast_env,
    item_rows,
    order_rows,
    requests_after_kill,
    requests_sent,
    run_sync_cli,
    run_sync_main,
    splits_in,
    start_sync,
    wait_for,
)

ORDERS = ("--resources", "orders")


def one_chunk(env: dict[str, str]) -> dict[str, str]:
    """For a sync that only sets a test up: its commits are not under test, one is enough."""
    return dict(env, SOURCES__CIKLEK__CHECKPOINT_PAGES="100")


def count_orders(db: Path) -> int:
    return int(query(db, "select count(*) from ciklek.orders")[0][0])


def test_sigkill_mid_backfill_then_rerun_equals_a_clean_sync(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 60)
    env = fast_env(sb)
    home = env_home(env)
    proc = start_sync(env, *ORDERS, cwd=clean_env, log=tmp_path / "killed.log")
    wait_for(lambda: committed_pages(home) >= 2 * CHUNK_PAGES, what="two committed chunks")
    seen = committed_pages(home)
    # The third chunk's pages are fetched: the kill lands while dlt loads it (a job that wrote
    # to the warehouse but was not yet marked done must not leave duplicate line items).
    wait_for(lambda: requests_sent(sb) >= 3 * CHUNK_PAGES, what="the third chunk's pages")
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    killed_requests = requests_after_kill(sb)
    assert killed_requests < ORDER_PAGES, "the sync finished before it could be killed"

    set_latency(sb, 0)  # the latency made the run killable; the re-run and the clean one need none
    # The dead run's lock does not block. (In one chunk: what the re-run fetches again is the
    # point, not how often it commits.)
    rerun = run_sync_main(one_chunk(env), *ORDERS, cwd=clean_env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rerun_requests = requests_sent(sb) - killed_requests
    # It resumed from the last committed chunk, not from page 1 (a full sync is 20 pages).
    slack = splits_in((tmp_path / "killed.log").read_text(), rerun.stderr) + 1
    assert rerun_requests <= ORDER_PAGES - seen + slack

    clean_cwd = tmp_path / "clean"
    clean_cwd.mkdir()
    clean = run_sync_main(reference_env(sb, env, tmp_path / "clean-home"), *ORDERS, cwd=clean_cwd)
    assert clean.returncode == 0, clean.stderr
    db, clean_db = clean_env / DEFAULT_DB, clean_cwd / DEFAULT_DB
    assert order_rows(db) == order_rows(clean_db)
    assert item_rows(db) == item_rows(clean_db)
    assert len(order_rows(db)) == 400


def test_tiny_daily_quota_completes_a_backfill_over_several_days(
    sandbox_factory, clean_env: Path
) -> None:
    """Quota 7 requests/day, backfill 20 pages: three "days" (runs), exits 75, 75, 0.

    Measured overhead: each stopped run spends one extra request, the one the server refuses
    with 429 daily_quota_exceeded (refused requests do not count against the quota, and the
    stored cursor points at the next unfetched page, so no page is fetched twice). A run started
    before the reset also tries, and costs exactly that one refused request. Total requests =
    20 pages + 1 per stopped run.
    """
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--daily-quota", 7)
    # One page at a time: the days are counted for a sequential walk (a quota stop in ranges is
    # tested in tests/e2e/test_ranges.py; ranges cost a request or two more, here a fourth day).
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="1")
    db = clean_env / DEFAULT_DB
    codes: list[int] = []
    rows: list[int] = []
    stops = 0
    for day in range(5):
        result = run_sync_main(env, *ORDERS, cwd=clean_env)
        codes.append(result.returncode)
        rows.append(count_orders(db))
        if result.returncode == 0:
            break
        assert result.returncode == 75, result.stdout + result.stderr
        assert re.search(r"resume after \d{4}-\d\d-\d\dT00:00:00Z", result.stdout), result.stdout
        stops += 1
        if day == 0:
            # Same day again: it still tries (one refused request), keeps everything, exits 75.
            before = requests_sent(sb)
            again = run_sync_main(env, *ORDERS, cwd=clean_env)
            assert again.returncode == 75
            assert requests_sent(sb) - before == 1
            assert count_orders(db) == rows[-1]
            stops += 1
        sb.control_post("new_day")
    assert codes == [75, 75, 0]
    assert rows == [7 * PAGE, 14 * PAGE, 400]
    assert requests_sent(sb) == ORDER_PAGES + stops
    assert sb.stats()["by_status"].get("429") == stops
    sb.control_post("new_day")  # reading the API's truth costs quota too
    assert_orders_match_api(db, sb)


def test_sigterm_mid_sync_commits_what_was_fetched_and_exits_75(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 60)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    log = tmp_path / "term.log"
    proc = start_sync(env, *ORDERS, cwd=clean_env, log=log)
    wait_for(lambda: requests_sent(sb) >= CHUNK_PAGES, what="the first chunk's pages")
    # The first chunk's pages are fetched: the signal lands while dlt normalizes and loads it,
    # where dlt's own handlers used to swallow it (exit 0) or fail the run (exit 1).
    time.sleep(0.15)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 75, log.read_text()
    fetched = requests_sent(sb)
    assert fetched < ORDER_PAGES
    assert "stopped" in log.read_text()
    # Every page fetched before the signal was committed: none lost, none to fetch again (a
    # range's last page may be partial).
    splits = splits_in(log.read_text())
    assert (fetched - splits) * PAGE <= count_orders(db) <= fetched * PAGE

    set_latency(sb, 0)  # only the signalled run needed slow pages (and its chunks)
    rerun = run_sync_main(one_chunk(env), *ORDERS, cwd=clean_env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    splits += splits_in(rerun.stderr)
    assert ORDER_PAGES <= requests_sent(sb) <= ORDER_PAGES + splits + 1
    assert_orders_match_api(db, sb)


def test_a_second_sync_while_one_runs_exits_75_and_changes_nothing(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 60)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    log = tmp_path / "first.log"
    proc = start_sync(env, *ORDERS, cwd=clean_env, log=log)
    wait_for(lambda: requests_sent(sb) >= 2, what="the first sync to start")
    second = run_sync_cli(env, *ORDERS, cwd=clean_env)  # a process: the lock is the point
    assert second.returncode == 75
    assert "another sync of pipeline 'ciklek' is running" in second.stderr
    set_latency(sb, 0)  # the first sync was slow only while the second one tried
    assert proc.wait(timeout=60) == 0, log.read_text()
    # The second run sent nothing and wrote no run row: only the first run's 20 pages (and
    # what its ranges cost, see `splits_in`).
    sent = requests_sent(sb)
    assert ORDER_PAGES <= sent <= ORDER_PAGES + splits_in(log.read_text()) + 1
    assert_orders_match_api(db, sb)
    runs = query(db, "select outcome from ciklek._ciklek_sync_runs")
    assert runs == [("completed",)]
    ledger = json.loads((env_home(env) / "ledger.json").read_text())
    [per_day] = ledger.values()
    assert [day["ciklek"] for day in per_day.values()] == [sent]  # the first run's requests


def test_full_refresh_interrupted_is_continued_by_the_next_run(
    sandbox_factory, clean_env: Path
) -> None:
    """A reload stopped twice is continued (not restarted) by the same command and then by a
    plain sync. Built beside the live table: until it completes, every query sees the old
    table, row for row, and the record deleted upstream; the swap makes the table the API's."""
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    assert run_sync_main(one_chunk(env), *ORDERS, cwd=clean_env).returncode == 0
    old = order_rows(db)
    gone = sorted(api_records(sb))[0]
    sb.control_request("DELETE", f"records/orders/{gone}")  # only a reload can drop it

    first = requests_sent(sb)
    stopped = run_sync_main(env, *ORDERS, "--full-refresh", "--max-requests", "5", cwd=clean_env)
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    splits = splits_in(stopped.stderr)
    assert order_rows(db) == old  # the live table: untouched
    shadow = "ciklek._ciklek_reload_orders"
    [(built,)] = query(db, f"select count(*) from {shadow}")
    assert (5 - splits) * PAGE <= built <= 5 * PAGE

    before = requests_sent(sb)
    again = run_sync_main(env, *ORDERS, "--full-refresh", "--max-requests", "5", cwd=clean_env)
    assert again.returncode == 75
    splits += splits_in(again.stderr)
    [(grown,)] = query(db, f"select count(*) from {shadow}")
    assert built < grown <= 10 * PAGE  # the same command continues the reload
    assert requests_sent(sb) - before == 5
    assert order_rows(db) == old

    rest = run_sync_main(env, *ORDERS, cwd=clean_env)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert "reload swapped in: orders, order_line_items" in rest.stdout
    splits += splits_in(rest.stderr)
    # Continued, not restarted: the reload's three runs sent one traversal's pages.
    assert requests_sent(sb) - first <= ORDER_PAGES + splits + 1
    assert_orders_match_api(db, sb)
    assert query(db, f"select count(*) from ciklek.orders where id = '{gone}'") == [(0,)]
    tables = query(
        db, "select table_name from information_schema.tables where table_name like '%reload%'"
    )
    assert tables == []  # the shadow tables went with the swap


def test_full_refresh_drop_first_empties_once_and_is_continued(
    sandbox_factory, clean_env: Path
) -> None:
    """`--drop-first` (where no safe swap exists, or asked for): emptied once at the start, then
    continued by the same command and by a plain sync."""
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    assert run_sync_main(one_chunk(env), *ORDERS, cwd=clean_env).returncode == 0
    gone = sorted(api_records(sb))[0]
    sb.control_request("DELETE", f"records/orders/{gone}")

    first = requests_sent(sb)
    refresh = ("--full-refresh", "--drop-first", "--max-requests", "5")
    stopped = run_sync_main(env, *ORDERS, *refresh, cwd=clean_env)
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    assert "full refresh dropped and reloaded: orders, order_line_items" in stopped.stdout
    splits = splits_in(stopped.stderr)
    # Emptied once, at the start, then 5 pages (a range's last page may be partial).
    assert (5 - splits) * PAGE <= count_orders(db) <= 5 * PAGE

    before, loaded = requests_sent(sb), count_orders(db)
    again = run_sync_main(env, *ORDERS, *refresh, cwd=clean_env)
    assert again.returncode == 75
    splits += splits_in(again.stderr)
    assert loaded < count_orders(db) <= 10 * PAGE  # the same command continues the reload
    assert requests_sent(sb) - before == 5

    rest = run_sync_main(env, *ORDERS, cwd=clean_env)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    splits += splits_in(rest.stderr)
    assert requests_sent(sb) - first <= ORDER_PAGES + splits + 1
    assert_orders_match_api(db, sb)
    assert query(db, f"select count(*) from ciklek.orders where id = '{gone}'") == [(0,)]


def test_max_requests_and_daily_budget_stop_before_exceeding(
    sandbox_factory, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    capped = run_sync_main(env, *ORDERS, "--max-requests", "4", cwd=clean_env)
    assert capped.returncode == 75
    assert "--max-requests 4 reached" in capped.stdout
    assert "resume after" not in capped.stdout  # a per-run cap: the next run may go at once
    assert requests_sent(sb) == 4
    assert count_orders(db) == 4 * PAGE

    # The ledger remembers today's 4 requests across runs: a budget of 7 leaves 3.
    budget = dict(env, SOURCES__CIKLEK__DAILY_REQUEST_BUDGET="7")
    spent = run_sync_main(budget, *ORDERS, cwd=clean_env)
    assert spent.returncode == 75
    assert "daily request budget 7 reached" in spent.stdout
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert f"resume after {tomorrow.isoformat()}T00:00:00Z" in spent.stdout
    assert requests_sent(sb) == 7
    assert count_orders(db) == 7 * PAGE
    nothing = run_sync_main(budget, *ORDERS, cwd=clean_env)
    assert nothing.returncode == 75
    assert requests_sent(sb) == 7


def test_drop_first_refresh_killed_in_its_first_chunk_is_finished_by_a_plain_rerun(
    sandbox_factory, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS, "--latency-ms", 30)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    assert run_sync_main(one_chunk(env), *ORDERS, cwd=clean_env).returncode == 0
    gone = sorted(api_records(sb))[0]
    sb.control_request("DELETE", f"records/orders/{gone}")
    before = requests_sent(sb)
    reload = ("--full-refresh", "--drop-first")
    proc = start_sync(env, *ORDERS, *reload, cwd=clean_env, log=tmp_path / "r.log")
    # Kill while dlt loads the first chunk, the one that empties the table (a kill before it
    # was extracted leaves the warehouse untouched: the refresh simply has not begun).
    loading = env_home(env) / "pipelines" / "ciklek" / "load" / "normalized"
    # (orders' own jobs: the run's first load records only its request allowance)
    wait_for(lambda: any(loading.glob("*/completed_jobs/orders.*")), 60, "the first chunk loading")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert requests_sent(sb) - before < ORDER_PAGES

    set_latency(sb, 0)  # only the killed run needed slow pages
    rerun = run_sync_main(env, *ORDERS, cwd=clean_env)  # no flag: it must not stop half-reloaded
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_orders_match_api(db, sb)
