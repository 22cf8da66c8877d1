"""`ciklek query`: read-only SQL on the pipeline's DuckDB file, for analysts with no extra install.

Why here and read-only: the `duckdb` CLI is not a dependency, and an analyst's session must never
write to (or hold a write lock on) the file a scheduled sync writes to. The connection is opened
with `read_only=True`, so DuckDB itself refuses writes; the dataset is put on the search path so
`select count(*) from orders` works as well as `from ciklek.orders`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from connector.errors import ConfigError
from connector.warehouse.faults import as_error, classify

FORMATS = ("table", "csv", "json")


def run_query(path: Path, sql: str, *, dataset: str = "ciklek", fmt: str = "table") -> str:
    """The result of `sql` on the DuckDB file at `path`, rendered as `fmt`."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise ConfigError(
            f"no DuckDB file at {path}: run `ciklek sync` first or pass --duckdb-file"
        )
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        fault = classify(exc)
        if fault is None:
            raise ConfigError(f"cannot open {path} as a DuckDB database: {exc}") from None
        raise as_error(fault, f"duckdb ({path})") from None
    with con:
        found = con.execute(
            "select count(*) from information_schema.schemata where schema_name = ?", [dataset]
        ).fetchone()
        if found == (1,):
            con.execute(f'SET search_path = "{dataset}"')
        try:
            relation = con.sql(sql)
        except duckdb.Error as exc:
            raise ConfigError(f"query failed: {str(exc).splitlines()[0]}") from None
        if relation is None:  # a statement without a result (e.g. SET)
            return ""
        columns, rows = list(relation.columns), relation.fetchall()
    return render(columns, rows, fmt)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    return str(value)


def iso_utc(value: dt.datetime) -> str:
    if value.tzinfo is None:
        return value.isoformat()
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)  # exact: a float would round money
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, (dt.date, dt.time, bytes)) or not isinstance(
        value, (str, int, float, bool, list, dict, type(None))
    ):
        return str(value)
    return value


def render(columns: Sequence[str], rows: Sequence[Sequence[object]], fmt: str) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    if fmt == "json":
        objects = [{c: _json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        return json.dumps(objects, ensure_ascii=False)
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_text(v) for v in row])
    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue().rstrip("\n")
