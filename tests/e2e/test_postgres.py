"""End to end into a real PostgreSQL: types, counts, and an incremental second sync.

`make test` (and so CI) starts a private PostgreSQL with scripts/postgres.sh and exports its DSN
as CIKLEK_TEST_PG_DSN. Outside CI, without that DSN, the test is skipped; in CI (CI=true) a
missing DSN fails it, so the PostgreSQL path can never silently stop being tested.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

pytestmark = pytest.mark.postgres

ORDERS, CUSTOMERS, PRODUCTS = 210, 60, 30  # page size 50: short last pages


def pg(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg2

    con = psycopg2.connect(dsn)
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        con.close()


def _api_line_items(sb: SandboxProcess) -> dict[str, int]:
    """Line items per order, as the API serves them."""
    items: dict[str, int] = {}
    with sb.client() as http:
        after = None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            body = http.get("/orders", params=params).json()
            for order in body["data"]:
                items[order["id"]] = len(order["line_items"])
            after = body["meta"]["next_cursor"]
            if after is None:
                return items


def test_postgres_sync_types_counts_and_incremental_merge(
    sandbox_factory, pg_schema: tuple[str, str]
) -> None:
    dsn, schema = pg_schema
    sb: SandboxProcess = sandbox_factory(
        "--orders", ORDERS, "--customers", CUSTOMERS, "--products", PRODUCTS
    )
    env = sync_env(sb, DESTINATION__POSTGRES__CREDENTIALS=dsn, SOURCES__CIKLEK__PAGE_SIZE="50")
    args = ("sync", "--destination", "postgres", "--dataset", schema)

    first = run_main(*args, env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    first_requests = sb.stats()["requests"]
    expected_items = _api_line_items(sb)

    def count(table: str, where: str = "") -> int:
        return int(pg(dsn, f'select count(*) from "{schema}".{table} {where}')[0][0])

    assert count("orders") == ORDERS
    assert count("customers") == CUSTOMERS
    assert count("products") == PRODUCTS
    assert count("order_line_items", "where not _ciklek_deleted") == sum(expected_items.values())

    types = {
        (table, column): (data_type, precision, scale)
        for table, column, data_type, precision, scale in pg(
            dsn,
            "select table_name, column_name, data_type, numeric_precision, numeric_scale "
            "from information_schema.columns where table_schema = %s",
            (schema,),
        )
    }
    for money in (
        ("orders", "subtotal"),
        ("orders", "tax"),
        ("orders", "total"),
        ("order_line_items", "unit_price"),
        ("order_line_items", "amount"),
        ("customers", "credit_limit"),
        ("products", "price"),
    ):
        assert types[money] == ("numeric", 38, 2), money
    for instant in (
        ("orders", "created_at"),
        ("orders", "updated_at"),
        ("orders", "shipped_at"),
        ("customers", "updated_at"),
        ("products", "created_at"),
    ):
        assert types[instant][0] == "timestamp with time zone", instant
    assert types[("orders", "delivery_date")][0] == "date"

    # Money round-trips exactly (cents / 100) and instants are the same UTC instant.
    import datetime as dt
    from decimal import Decimal

    order_id = pg(dsn, f'select id from "{schema}".orders order by id limit 1')[0][0]
    raw = sb.control_request("GET", f"records/orders/{order_id}").json()
    total, updated_at = pg(
        dsn, f'select total, updated_at from "{schema}".orders where id = %s', (order_id,)
    )[0]
    assert total == Decimal(raw["total"]).scaleb(-2)
    assert updated_at == dt.datetime.fromisoformat(raw["updated_at"])

    # Change the world: 5 updated + 3 new orders, and one order loses all its line items.
    changed = sb.control_post("mutate", update=5, create=3, resource="orders")
    assert len(changed["updated"]) == 5 and len(changed["created"]) == 3
    emptied = next(
        oid for oid, n in expected_items.items() if n > 0 and oid not in changed["updated"]
    )
    patched = sb.control_request("PATCH", f"records/orders/{emptied}", json={"line_items": []})
    assert patched.status_code == 200
    sb.control_post("reset_stats")

    second = run_main(*args, env=env)
    assert second.returncode == 0, second.stderr + second.stdout
    # Incremental: only the changed orders travel (one page each resource), not a reload.
    assert sb.stats()["requests"] == 3

    expected_items = _api_line_items(sb)
    assert expected_items[emptied] == 0
    assert count("orders") == ORDERS + 3
    assert pg(dsn, f'select count(distinct id) from "{schema}".orders') == [(ORDERS + 3,)]
    assert count("order_line_items", "where not _ciklek_deleted") == sum(expected_items.values())
    assert pg(
        dsn,
        f'select count(*), count(distinct id) from "{schema}".order_line_items '
        "where not _ciklek_deleted",
    )[0] == (sum(expected_items.values()), sum(expected_items.values()))
    assert count("order_line_items", f"where order_id = '{emptied}'") == 0  # no tombstone left
    for oid in changed["created"]:
        assert count("order_line_items", f"where order_id = '{oid}'") == expected_items[oid]
    for oid in changed["updated"]:
        raw = sb.control_request("GET", f"records/orders/{oid}").json()
        row = pg(dsn, f'select total, status from "{schema}".orders where id = %s', (oid,))
        assert row == [(Decimal(raw["total"]).scaleb(-2), raw["status"])]

    runs = pg(
        dsn, f'select outcome, requests from "{schema}"._ciklek_sync_runs order by started_at'
    )
    assert runs == [("completed", first_requests), ("completed", 3)]
