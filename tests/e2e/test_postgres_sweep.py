"""`ciklek sweep` into a real PostgreSQL: the marking SQL (UPDATE with load-id comparisons,
line items through their order) works there as on DuckDB. Skipped without CIKLEK_TEST_PG_DSN,
like tests/e2e/test_postgres.py (whose fixtures it uses)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_postgres import pg
from tests.helpers import sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import api_records

pytestmark = pytest.mark.postgres


def test_postgres_sweep_marks_deleted_rows_and_their_line_items(
    sandbox_factory: Any,
    pg_schema: tuple[str, str],
) -> None:
    dsn, schema = pg_schema
    sb: SandboxProcess = sandbox_factory("--orders", 80, "--customers", 40, "--products", 10)
    env = sync_env(sb, DESTINATION__POSTGRES__CREDENTIALS=dsn, SOURCES__CIKLEK__PAGE_SIZE="20")
    where = ("--destination", "postgres", "--dataset", schema, "--resources", "orders,customers")
    assert run_main("sync", *where, env=env).returncode == 0
    orders, customers = sorted(api_records(sb)), sorted(api_records(sb, "customers"))
    for resource, ids in (("orders", orders[:5]), ("customers", customers[:3])):
        for rid in ids:
            sb.control_request("DELETE", f"records/{resource}/{rid}")

    result = run_main("sweep", *where, env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    def dead(table: str, key: str = "id") -> set[str]:
        sql = f'select {key} from "{schema}".{table} where _ciklek_deleted_at is not null'
        return {r[0] for r in pg(dsn, sql)}

    assert dead("orders") == set(orders[:5])
    assert dead("customers") == set(customers[:3])
    assert dead("order_line_items", "order_id") == set(orders[:5])
    live = pg(dsn, f'select count(*) from "{schema}".orders where _ciklek_deleted_at is null')
    assert live == [(75,)]
    [(data_type,)] = pg(
        dsn,
        "select data_type from information_schema.columns where table_schema = %s "
        "and table_name = 'orders' and column_name = '_ciklek_deleted_at'",
        (schema,),
    )
    assert data_type == "timestamp with time zone"
    [(kind, marked)] = pg(
        dsn,
        f'select kind, rows_marked_deleted from "{schema}"._ciklek_sync_runs '
        "order by started_at desc limit 1",
    )
    assert (kind, marked) == ("sweep", 8)

    sb.control_post(f"records/customers/{customers[0]}/recreate", json={})
    assert run_main("sync", *where, env=env).returncode == 0
    assert dead("customers") == set(customers[1:3])  # live again
