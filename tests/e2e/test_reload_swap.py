"""`--full-refresh` builds the reload beside the live tables and swaps it in when complete.

Until the swap every query sees the old table, row for row (a reload that needs more than a
day's quota leaves dashboards whole); the swap is one transaction, so a kill at any instant
leaves the old table or the new one, never neither; where no safe swap exists, the user is told
before a request is sent.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEFAULT_DB, query
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    api_records,
    assert_orders_match_api,
    fast_env,
    item_rows,
    order_rows,
    requests_sent,
    run_sync_main,
    wait_for,
)

ORDERS = ("--resources", "orders")
# 160 orders in pages of 20 (tests.syncutil.fast_env), chunks of 3 pages, no window limit.
FLAGS = ("--orders", 160, "--customers", 5, "--products", 5, "--window-limit", 1_000_000)


def shadow_tables(db: Path) -> list[str]:
    rows = query(
        db,
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_name like '_ciklek_reload_%' order by 1",
    )
    return [r[0] for r in rows]


def one_chunk(env: dict[str, str]) -> dict[str, str]:
    """`env` committing once per run: for the runs whose chunks are not the point."""
    return {**env, "SOURCES__CIKLEK__CHECKPOINT_PAGES": "100"}


def changed_world(sb: SandboxProcess) -> str:
    """Orders change after the first sync: some updated, some created, one deleted (which only
    a reload or a sweep can notice). Returns the deleted id."""
    sb.control_post("mutate", resource="orders", update=30, create=5)
    gone = sorted(api_records(sb))[0]
    sb.control_request("DELETE", f"records/orders/{gone}").raise_for_status()
    return gone


def test_a_reload_stopped_by_the_daily_quota_leaves_the_old_table_whole_until_it_swaps(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    # About the reload, not the look-back: a quiet sync is then exactly one request.
    env = fast_env(sb, SOURCES__CIKLEK__LOOKBACK_SECONDS="0")
    db = clean_env / DEFAULT_DB
    # The first load is only the old table: one chunk (the reload below keeps chunks of 3).
    assert run_sync_main(one_chunk(env), *ORDERS, cwd=clean_env).returncode == 0
    old_orders, old_items = order_rows(db), item_rows(db)
    gone = changed_world(sb)
    sb.control_post("limits", json={"daily_quota": requests_sent(sb) + 4})

    stopped = run_sync_main(env, *ORDERS, "--full-refresh", cwd=clean_env)
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    assert "daily quota exhausted" in stopped.stdout
    # Half-way: the live tables are exactly the old ones; the reload lies beside them.
    assert order_rows(db) == old_orders and item_rows(db) == old_items
    assert "ciklek._ciklek_reload_orders" in shadow_tables(db)
    [(built,)] = query(db, "select count(*) from ciklek._ciklek_reload_orders")
    assert 0 < built < len(old_orders)
    status = run_main("status", env=env, cwd=clean_env)
    assert status.returncode == 0
    assert "reload orders: in progress since" in status.stdout
    assert "beside the live tables (_ciklek_reload_orders" in status.stdout

    sb.control_post("new_day")
    sb.control_post("limits", json={"daily_quota": 50_000})
    plan = run_main("plan", *ORDERS, env=env, cwd=clean_env)
    assert plan.returncode == 0, plan.stderr
    assert "reload orders: in progress" in plan.stdout and "request(s) left" in plan.stdout

    done = run_sync_main(env, *ORDERS, cwd=clean_env)  # the next day's plain sync finishes it
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reload swapped in: orders, order_line_items" in done.stdout
    assert_orders_match_api(db, sb)
    assert query(db, f"select count(*) from ciklek.orders where id = '{gone}'") == [(0,)]
    assert shadow_tables(db) == []
    again = requests_sent(sb)
    quiet = run_sync_main(env, *ORDERS, cwd=clean_env)  # the reload's resume point holds
    assert quiet.returncode == 0 and requests_sent(sb) - again == 1


_KILL_IN_SWAP = """
import os, sys, time
import connector.warehouse.reload as reload
original = reload._swap_one
def stalled(*args):
    changed = original(*args)  # rows deleted and copied, inside the open transaction
    open(os.environ["SWAP_MARKER"], "w").write("in the swap")
    time.sleep(600)
    return changed
reload._swap_one = stalled
from connector.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_inside_the_swap_leaves_the_old_table_then_the_rerun_swaps(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    # About the swap, not the look-back: the rerun's own sync is then exactly one request.
    env = fast_env(sb, SOURCES__CIKLEK__LOOKBACK_SECONDS="0")
    db = clean_env / DEFAULT_DB
    # About the swap, not the chunks: the first load and the reload each in one chunk.
    env = one_chunk(env)
    assert run_sync_main(env, *ORDERS, cwd=clean_env).returncode == 0
    old_orders = order_rows(db)
    changed_world(sb)
    marker = tmp_path / "in-swap"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_IN_SWAP, "sync", *ORDERS, "--full-refresh"],
        env={**env, "SWAP_MARKER": str(marker)},
        cwd=clean_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(marker.exists, 120, "the reload to reach its swap")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert order_rows(db) == old_orders  # the transaction never committed: the old table, whole
    before = requests_sent(sb)
    rerun = run_sync_main(env, *ORDERS, cwd=clean_env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "reload swapped in: orders, order_line_items" in rerun.stdout
    assert requests_sent(sb) - before == 1  # swapped from what was built: nothing fetched again
    assert_orders_match_api(db, sb)
    assert shadow_tables(db) == []


def test_a_destination_without_a_safe_swap_needs_drop_first_before_any_request(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory("--orders", 5, "--customers", 5, "--products", 5)
    env = fast_env(sb)
    done = run_main("sync", "--destination", "snowflake", "--full-refresh", env=env)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "no safe swap" in line and "--drop-first" in line
    misuse = run_main("sync", "--drop-first", env=env)
    assert misuse.returncode == 2 and "--drop-first applies to --full-refresh" in misuse.stderr
    assert sb.stats()["requests"] == 0


@pytest.mark.postgres
def test_postgresql_reload_swaps_in_under_a_dependent_view(
    sandbox_factory: Any, pg_schema: tuple[str, str]
) -> None:
    import psycopg2

    dsn, schema = pg_schema
    sb: SandboxProcess = sandbox_factory("--orders", 120, "--customers", 5, "--products", 5)
    env = {
        **fast_env(sb, SOURCES__CIKLEK__CHECKPOINT_PAGES="2"),
        "DESTINATION__POSTGRES__CREDENTIALS": dsn,
    }
    pg_args = ("--destination", "postgres", "--dataset", schema, *ORDERS)
    assert run_main("sync", *pg_args, env=one_chunk(env)).returncode == 0  # the old table

    def sql(text: str) -> list[tuple[Any, ...]]:
        with psycopg2.connect(dsn) as con, con.cursor() as cur:
            cur.execute(text)
            return list(cur.fetchall()) if cur.description else []

    # A dbt-like view on the live table: a rename swap would leave it on the old table.
    sql(f'create view "{schema}".big_orders as select id, total from "{schema}".orders')
    old = sql(f'select count(*) from "{schema}".big_orders')
    changed_world(sb)
    stopped = run_main("sync", *pg_args, "--full-refresh", "--max-requests", "3", env=env)
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    assert sql(f'select count(*) from "{schema}".big_orders') == old  # the old table, whole
    done = run_main("sync", *pg_args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    truth = api_records(sb)
    assert sql(f'select count(*) from "{schema}".big_orders') == [(len(truth),)]
    assert {r[0] for r in sql(f'select id from "{schema}".orders')} == set(truth)
    leftovers = sql(
        "select table_schema, table_name from information_schema.tables "
        f"where table_name like '_ciklek_reload_%' and table_schema like '{schema}%'"
    )
    assert leftovers == []
