"""History under the hardest conditions: four workers and split `updated_since` ranges, a
`kill -9` mid-chunk and a re-run, incremental syncs, then a sweep that fetches every record
again. `orders_versions` must hold exactly the versions the API served at each run (none lost,
none twice), and each order version exactly the line items it had.

The killed sync is a real `ciklek sync` process (the kill is the point); the re-runs and the
sweep run `ciklek`'s main in-process. The sandbox's pages take 120 ms, so the orders traversal
splits into ranges walked at once. The sweep commits every 10 pages (still several chunks), the
rest every 3.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.e2e.test_concurrency import _chunks_committed, _sandbox
from tests.helpers import DEFAULT_DB, query
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    CHUNK_PAGES,
    api_records,
    assert_orders_match_api,
    env_home,
    fast_env,
    instant,
    requests_sent,
    run_sync_main,
    splits_in,
    start_sync,
    wait_for,
)

Version = tuple[str, Any]
Item = tuple[str, Any, str, int]


def served(sb: SandboxProcess) -> tuple[set[Version], set[Item]]:
    """The order versions the API serves now, and each one's line items."""
    orders, items = set(), set()
    for rid, record in api_records(sb).items():
        at = instant(record["updated_at"])
        orders.add((rid, at))
        items |= {(rid, at, i["id"], i["quantity"]) for i in record["line_items"]}
    return orders, items


def kept(db: Path) -> tuple[list[Version], list[Item]]:
    orders = query(db, "select id, updated_at from ciklek.orders_versions")
    items = query(
        db,
        "select order_id, order_updated_at, id, quantity from ciklek.order_line_items_versions",
    )
    return [(r[0], r[1]) for r in orders], [(r[0], r[1], r[2], r[3]) for r in items]


def test_versions_survive_ranges_a_kill_and_a_sweep_exactly_once(
    sandbox_factory: Any, clean_env: Path, tmp_path: Path
) -> None:
    sb = _sandbox(sandbox_factory, "--latency-ms", 120)
    env = fast_env(sb, SOURCES__CIKLEK__MAX_CONCURRENCY="4", SOURCES__CIKLEK__HISTORY="orders")
    db = clean_env / DEFAULT_DB
    expected_orders, expected_items = served(sb)

    proc = start_sync(env, cwd=clean_env, log=tmp_path / "killed.log")
    wait_for(lambda: _chunks_committed(env_home(env)) >= 2, what="two committed chunks")
    wait_for(lambda: requests_sent(sb) >= 3 * CHUNK_PAGES + 1, what="the third chunk's pages")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    rerun = run_sync_main(env, cwd=clean_env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    logs = [(tmp_path / "killed.log").read_text(), rerun.stderr]

    for update, create in ((30, 5), (25, 0)):
        sb.control_post("mutate", resource="orders", update=update, create=create)
        orders, items = served(sb)
        expected_orders |= orders
        expected_items |= items
        incremental = run_sync_main(env, cwd=clean_env)
        assert incremental.returncode == 0, incremental.stdout + incremental.stderr
        logs.append(incremental.stderr)
    sweep = run_main("sweep", env=dict(env, SOURCES__CIKLEK__CHECKPOINT_PAGES="10"), cwd=clean_env)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    logs.append(sweep.stderr)
    assert splits_in(*logs) >= 1, "the orders traversals never split into ranges"

    orders, items = kept(db)
    assert len(orders) == len(set(orders)), "a version loaded twice"
    assert len(items) == len(set(items)), "a line item of a version loaded twice"
    assert set(orders) == expected_orders
    assert set(items) == expected_items
    assert_orders_match_api(db, sb)
    current = query(db, "select count(*) from ciklek.orders_history where is_current")
    assert current == query(db, "select count(*) from ciklek.orders")
