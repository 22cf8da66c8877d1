"""The run row of a sync that loads nothing else is written by two INSERTs instead of a dlt load
(connector/runs/sync.py `_run_rows_alone`), the first sync's too (its first allowance's load
creates `_ciklek_sync_runs` empty): the rows must be what the load writes, on DuckDB and
PostgreSQL, and anything else waiting for a load (here a schema change) still goes through dlt."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import query, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

Query = Callable[[str], list[tuple[Any, ...]]]


def _duckdb(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[dict[str, str], Query]:
    db = tmp_path / "w.duckdb"
    return {"DESTINATION__DUCKDB__CREDENTIALS": str(db)}, lambda sql: query(db, sql)


def _postgres(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[dict[str, str], Query]:
    import psycopg2

    dsn, schema = request.getfixturevalue("pg_schema")

    def pg(sql: str) -> list[tuple[Any, ...]]:
        with psycopg2.connect(dsn) as con, con.cursor() as cur:
            cur.execute(sql.replace("ciklek.", f'"{schema}".'))
            return list(cur.fetchall())

    env = {"DESTINATION__POSTGRES__CREDENTIALS": dsn, "ciklek_args": f"postgres {schema}"}
    return env, pg


@pytest.mark.parametrize(
    "warehouse", [_duckdb, pytest.param(_postgres, marks=pytest.mark.postgres)]
)
def test_run_rows_written_directly_equal_loaded_ones_and_a_schema_change_still_loads(
    sandbox_factory: Callable[..., SandboxProcess],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    warehouse: Callable[..., tuple[dict[str, str], Query]],
) -> None:
    sb = sandbox_factory("--orders", 30, "--customers", 3, "--products", 3)
    extra, sql = warehouse(tmp_path, request)
    args, dataset = ["sync"], "ciklek"
    if "ciklek_args" in extra:
        destination, dataset = extra.pop("ciklek_args").split()
        args += ["--destination", destination, "--dataset", dataset]
    env = sync_env(sb, CIKLEK_HOME=str(tmp_path / "home"), **extra)

    spent = []
    for step in range(3):
        if step == 2:  # an undocumented field: a schema change the run row's load must record
            sb.control_post("fields", json={"resource": "orders", "add": {"loyalty_tier": "x"}})
            sb.control_post("mutate", resource="orders", update=2)
        before = sb.stats()["requests"]
        done = run_main(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        spent.append(sb.stats()["requests"] - before)

    runs = sql(
        "select run_id, outcome, exit_code, requests, rows, started_at, ended_at, _dlt_load_id "
        "from ciklek._ciklek_sync_runs order by started_at"
    )
    loads = {str(r[0]) for r in sql("select load_id from ciklek._dlt_loads")}
    assert [r[1:4] for r in runs] == [("completed", 0, n) for n in spent]
    assert runs[0][4] == 36 and runs[1][4] == 0 and runs[2][4] == 2  # rows each run loaded
    for run in runs:
        started, ended = run[5], run[6]
        assert isinstance(started, dt.datetime) and started.utcoffset() == dt.timedelta(0)
        assert started <= ended
    # The first run row too is written directly (its table was created, empty, by the first
    # allowance's load); the schema change's run row went through dlt's load.
    assert [str(r[7]) in loads for r in runs] == [False, False, True]
    columns = sql(
        "select column_name, data_type, is_nullable from information_schema.columns "
        f"where table_schema = '{dataset}' and table_name = '_ciklek_sync_runs' "
        "order by ordinal_position"
    )
    names = [c[0] for c in columns]
    assert names[-2:] == ["_dlt_load_id", "_dlt_id"] and len(names) == 18
    assert names[:3] == ["run_id", "pipeline", "kind"]
    assert [c[2] for c in columns][-2:] == ["NO", "NO"]
    changes = sql('select run_id, table_name, "column" from ciklek._ciklek_schema_changes')
    assert [(c[0], c[2]) for c in changes] == [(runs[2][0], "loyalty_tier")]

    ledger = sql(
        "select run_id, reserved, used, closed from ciklek._ciklek_request_ledger order by run_id"
    )
    # one closed row per run and day: the open allowance row was replaced, not kept beside it
    assert sorted(ledger) == sorted((r[0], n, n, True) for r, n in zip(runs, spent, strict=True))
