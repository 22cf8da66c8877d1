"""Upstream schema changes are recorded once each (`_ciklek_schema_changes`), said once in the
summary, the JSON log and `status`; `schema_changes = "freeze"` keeps the warehouse's columns.

The sandbox changes what its API sends from a moment on (`POST /_sandbox/fields`): a new field
on every order, or a documented field no longer sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEFAULT_DB, query
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import fast_env

ORDERS = ("--resources", "orders")
FLAGS = ("--orders", 100, "--customers", 5, "--products", 5, "--window-limit", 1_000_000)


def one_chunk(env: dict[str, str]) -> dict[str, str]:
    """`env` committing once per run: for the first load, whose chunks are not the point."""
    return {**env, "SOURCES__CIKLEK__CHECKPOINT_PAGES": "100"}


def changes(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        'select resource, table_name, "column", change from ciklek._ciklek_schema_changes '
        "order by detected_at",
    )


def columns(db: Path, table: str) -> set[str]:
    rows = query(
        db,
        "select column_name from information_schema.columns "
        f"where table_schema = 'ciklek' and table_name = '{table}'",
    )
    return {r[0] for r in rows}


def test_a_field_appearing_mid_traversal_is_one_new_column_row_and_one_summary_line(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    first = run_main("sync", *ORDERS, "--max-requests", "2", env=env)
    assert first.returncode == 75, first.stderr
    # Created empty: the table's first load (with the sandbox's own undocumented fields, which
    # get columns) is its starting point, not a change.
    earlier = changes(db)
    assert earlier == [] and {"channel", "meta"} <= columns(db, "orders")
    sb.control_post("fields", json={"resource": "orders", "add": {"loyalty_tier": "gold"}})
    second = run_main("sync", *ORDERS, "--log-format", "json", env=env)
    assert second.returncode == 0, second.stderr
    assert changes(db) == [*earlier, ("orders", "orders", "loyalty_tier", "new_column")]
    events = [json.loads(line) for line in second.stderr.splitlines()]
    said = [e for e in events if e["event"] == "schema_change"]
    assert [(e["column"], e["change"]) for e in said] == [("loyalty_tier", "new_column")]
    [summary] = [e for e in events if e["event"] == "summary"]
    assert [c["column"] for c in summary["schema_changes"]] == ["loyalty_tier"]
    assert "loyalty_tier" in columns(db, "orders")
    [(example,)] = query(
        db,
        "select example_record_id from ciklek._ciklek_schema_changes "
        "where \"column\" = 'loyalty_tier'",
    )
    assert query(db, f"select loyalty_tier from ciklek.orders where id = '{example}'") == [
        ("gold",)
    ]

    sb.control_post("mutate", resource="orders", update=5)
    third = run_main("sync", *ORDERS, env=env)  # the column exists now: nothing new to say
    assert third.returncode == 0, third.stderr
    assert "schema orders" not in third.stdout
    assert len(changes(db)) == len(earlier) + 1
    status = run_main("status", env=env)
    assert "schema changes (last 7 days):" in status.stdout
    assert "schema orders: new column loyalty_tier" in status.stdout


def test_freeze_keeps_the_columns_and_folds_new_fields_into_extra(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    env = fast_env(sb, SOURCES__CIKLEK__SCHEMA_CHANGES="freeze")
    db = clean_env / DEFAULT_DB
    assert run_main("sync", *ORDERS, env=one_chunk(env)).returncode == 0
    before = columns(db, "orders")
    sb.control_post("fields", json={"resource": "orders", "add": {"loyalty_tier": "gold"}})
    touched = sb.control_post("mutate", resource="orders", update=4)["updated"]
    done = run_main("sync", *ORDERS, env=env)
    assert done.returncode == 0, done.stderr
    assert "schema orders: folded into _ciklek_extra: loyalty_tier" in done.stdout
    assert columns(db, "orders") - before <= {"_ciklek_extra"}  # no column of its own
    assert "loyalty_tier" not in columns(db, "orders")
    frozen_changes = [c for c in changes(db) if c[2] == "loyalty_tier"]
    # Frozen from the first sync on: the sandbox's undocumented fields never got columns either.
    assert not {"channel", "meta"} & columns(db, "orders")
    extras = dict(query(db, "select id, _ciklek_extra from ciklek.orders"))
    tiers = {rid for rid, extra in extras.items() if "loyalty_tier" in json.loads(extra or "{}")}
    assert tiers == set(touched)
    assert all(json.loads(extras[rid])["loyalty_tier"] == "gold" for rid in touched)
    assert frozen_changes == [("orders", "orders", "loyalty_tier", "folded_into_extra")]


def test_a_documented_field_missing_from_a_page_is_one_row(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    env = fast_env(sb)
    db = clean_env / DEFAULT_DB
    assert run_main("sync", *ORDERS, env=one_chunk(env)).returncode == 0
    earlier = changes(db)
    sb.control_post("fields", json={"resource": "orders", "drop": ["delivery_date"]})
    sb.control_post("mutate", resource="orders", update=25)  # more than a page of them
    done = run_main("sync", *ORDERS, env=env)
    assert done.returncode == 0, done.stderr
    missing = ("orders", "orders", "delivery_date", "documented_field_missing")
    assert changes(db) == [*earlier, missing]
    assert done.stdout.count("documented field missing from a whole page: delivery_date") == 1


@pytest.mark.postgres
def test_postgresql_records_a_new_field_once_and_freeze_keeps_its_columns(
    sandbox_factory: Any, pg_schema: tuple[str, str]
) -> None:
    import psycopg2

    dsn, schema = pg_schema
    sb: SandboxProcess = sandbox_factory(*FLAGS)
    env = fast_env(
        sb, DESTINATION__POSTGRES__CREDENTIALS=dsn, SOURCES__CIKLEK__SCHEMA_CHANGES="freeze"
    )
    args = ("sync", *ORDERS, "--destination", "postgres", "--dataset", schema)
    assert run_main(*args, env=one_chunk(env)).returncode == 0

    def sql(text: str) -> list[tuple[Any, ...]]:
        with psycopg2.connect(dsn) as con, con.cursor() as cur:
            cur.execute(text)
            return list(cur.fetchall())

    def order_columns() -> set[str]:
        rows = sql(
            "select column_name from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = 'orders'"
        )
        return {r[0] for r in rows}

    before = order_columns()
    sb.control_post("fields", json={"resource": "orders", "add": {"loyalty_tier": "gold"}})
    touched = sb.control_post("mutate", resource="orders", update=3)["updated"]
    for _ in range(2):  # the second run sees the field again: nothing new to record
        assert run_main(*args, env=env).returncode == 0
        sb.control_post("mutate", resource="orders", update=1)
    assert order_columns() == before
    recorded = sql(
        f'select table_name, "column", change from "{schema}"._ciklek_schema_changes '
        "where \"column\" = 'loyalty_tier'"
    )
    assert recorded == [("orders", "loyalty_tier", "folded_into_extra")]
    extras = dict(sql(f'select id, _ciklek_extra from "{schema}".orders'))
    assert all(json.loads(extras[rid])["loyalty_tier"] == "gold" for rid in touched)
