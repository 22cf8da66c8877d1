"""`run_query`: read-only, exact money, the dataset on the search path, clear errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from connector.cli.query import run_query
from connector.errors import ConfigError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema ciklek")
        con.execute(
            "create table ciklek.orders as select * from (values "
            "('a', 12345678901234567.89::decimal(38,2), timestamptz '2026-03-15 09:00:00+05:30'),"
            "('b', -0.01::decimal(38,2), null)) t(id, total, shipped_at)"
        )
    return path


def test_json_keeps_money_exact_and_instants_utc(db: Path) -> None:
    out = run_query(db, "select id, total, shipped_at from orders order by id", fmt="json")
    assert json.loads(out) == [
        {"id": "a", "total": "12345678901234567.89", "shipped_at": "2026-03-15T03:30:00Z"},
        {"id": "b", "total": "-0.01", "shipped_at": None},
    ]


def test_csv_and_table_show_the_same_rows(db: Path) -> None:
    rows = list(csv.reader(io.StringIO(run_query(db, "select id, total from orders", fmt="csv"))))
    assert rows == [["id", "total"], ["a", "12345678901234567.89"], ["b", "-0.01"]]
    table = run_query(db, "select count(*) as n from ciklek.orders")
    assert "│ 2 │" in table or " 2 " in table.splitlines()[-2]


def test_writes_are_refused(db: Path) -> None:
    with pytest.raises(ConfigError, match="read-only"):
        run_query(db, "delete from orders")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("select count(*) from ciklek.orders").fetchall() == [(2,)]


def test_missing_file_and_bad_sql_and_bad_format_are_one_line_errors(db: Path) -> None:
    with pytest.raises(ConfigError, match="no DuckDB file"):
        run_query(db.with_name("nope.duckdb"), "select 1")
    with pytest.raises(ConfigError, match="query failed") as info:
        run_query(db, "selec 1")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="--format"):
        run_query(db, "select 1", fmt="xml")
