"""A --full-refresh of one resource keeps the other resources' quarantined records.

dlt's refresh drops the tables a resource owns, and a table variant is owned by whichever
resource created it first; `_ciklek_rejects` is therefore loaded by a resource of its own.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import run_main


def test_full_refresh_of_orders_keeps_other_resources_rejects(
    sandbox_factory, clean_env: Path
) -> None:
    sb = sandbox_factory(
        "--orders", 300, "--customers", 200, "--products", 50, "--bad-records", 0.05
    )
    bad = Counter(r["resource"] for r in sb.stats()["bad_records"])
    assert bad["orders"] > 0 and bad["customers"] > 0
    env = sync_env(sb)
    # Orders quarantine first, so a rejects table owned by whoever wrote it first would be
    # owned by orders, and dropped with orders' tables.
    assert run_main("sync", "--resources", "orders", env=env).returncode == 0
    first = run_main("sync", env=env)
    assert first.returncode == 0, first.stderr
    db = clean_env / DEFAULT_DB
    sql = "select resource, count(*) from ciklek._ciklek_rejects group by 1"
    before = dict(query(db, sql))
    assert before["orders"] == bad["orders"]
    assert before["customers"] == bad["customers"]

    refresh = run_main("sync", "--resources", "orders", "--full-refresh", env=env)
    assert refresh.returncode == 0, refresh.stderr
    after = dict(query(db, sql))
    # The other resources' rejects survive; the reload logs orders' bad records once more.
    assert after["customers"] == bad["customers"]
    assert after["orders"] == 2 * bad["orders"]
    assert query(db, "select count(*) from ciklek.orders")[0][0] == 300 - bad["orders"]
