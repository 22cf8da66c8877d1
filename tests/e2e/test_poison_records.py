"""End to end (issue 15 item 2): poison records are rejects, not outages, in DuckDB and PostgreSQL.

The sandbox serves orders that carry what stopped a resource forever before: an undocumented
field colliding with a documented column after dlt's normalisation (`Total` beside `total`), two
undocumented fields colliding with each other (`Notes` beside `notes`), a field nested 1,000
deep, 1,700 distinct undocumented fields, and forged lineage (`_dlt_id`, `_dlt_load_id`).
`ciklek sync` exits 0 (4 with `--strict`) and every other record loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connector.catalogue import CATALOGUE
from connector.records.undocumented import EXTRA_COLUMN, MAX_EXTRA_COLUMNS, MAX_NESTING
from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

ORDERS = 120
SMALL = ("--orders", ORDERS, "--customers", 20, "--products", 10, "--window-limit", 1_000_000)
WIDE = 1_700
DEEP = "[" * 1000 + "1" + "]" * 1000
REJECTED = 6


def _order_ids(sb: SandboxProcess) -> list[str]:
    with sb.client() as http:
        return [o["id"] for o in http.get("/orders", params={"limit": 10}).json()["data"]]


def _patch(sb: SandboxProcess, rid: str, body: str) -> None:
    response = sb.control_request(
        "PATCH", f"records/orders/{rid}", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text[:300]


def poison(sb: SandboxProcess) -> dict[str, str]:
    """Patch eight orders into poison; returns case → order id."""
    ids = _order_ids(sb)
    cases = {
        "documented": ids[0],
        "undocumented": ids[1],
        "deep": ids[2],
        "wide": ids[3],
        "lineage": ids[4],
        "deep_cursor": ids[5],
        "deep_id": ids[6],
        "no_id": ids[7],
    }
    _patch(sb, cases["documented"], json.dumps({"Total": 999}))
    _patch(sb, cases["undocumented"], json.dumps({"Notes": "A", "notes": "b"}))
    _patch(sb, cases["deep"], '{"deep": ' + DEEP + "}")
    _patch(sb, cases["wide"], json.dumps({f"f{n}": n for n in range(WIDE)}))
    _patch(sb, cases["lineage"], json.dumps({"_dlt_id": "forged", "_dlt_load_id": "forged"}))
    _patch(sb, cases["deep_cursor"], '{"updated_at": ' + DEEP + "}")
    _patch(sb, cases["deep_id"], '{"id": ' + DEEP + "}")
    _patch(sb, cases["no_id"], '{"id": null, "deep": ' + DEEP + "}")
    return cases


def env_for(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    return sync_env(
        sb,
        SOURCES__CIKLEK__PAGE_SIZE="50",
        SOURCES__CIKLEK__REQUESTS_PER_MINUTE="1000000",
        **extra,
    )


Query = Callable[[str], list[tuple[Any, ...]]]


def assert_poison_handled(sql: Query, schema: str, cases: dict[str, str]) -> None:
    """The six rejected orders are in _ciklek_rejects; everything else loaded, safely."""
    ds = f'"{schema}"'
    rejected = {cases[c] for c in ("documented", "undocumented", "deep", "deep_cursor")}
    loaded = {row[0] for row in sql(f"select id from {ds}.orders")}
    assert len(loaded) == ORDERS - REJECTED
    assert not loaded & {*rejected, cases["deep_id"], cases["no_id"]}
    assert {cases["wide"], cases["lineage"]} <= loaded
    rows = sql(f"select record_id, reason from {ds}._ciklek_rejects")
    reasons = {rid: why for rid, why in rows if rid in rejected}
    assert reasons == {
        cases["documented"]: "field 'Total' lands in column 'total', which is already defined",
        cases["undocumented"]: "fields 'Notes' and 'notes' both land in column 'notes'",
        cases["deep"]: f"deep: nested deeper than {MAX_NESTING} levels",
        cases["deep_cursor"]: f"updated_at: nested deeper than {MAX_NESTING} levels",
    }
    others = sorted((why, rid) for rid, why in rows if rid not in rejected)
    assert [why for why, _ in others] == [
        "id is missing",
        f"id: nested deeper than {MAX_NESTING} levels",
    ]
    assert others[0][1] is None and others[1][1].startswith("[[[[")  # the id, cut short
    assert len(rows) == REJECTED
    [(raw,)] = sql(f"select raw_json from {ds}._ciklek_rejects where record_id = '{cases['deep']}'")
    assert json.loads(raw)["id"] == cases["deep"]

    # 1,700 fields: the first 200 are columns, the rest one JSON object in _ciklek_extra.
    columns = {
        row[0]
        for row in sql(
            "select column_name from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = 'orders'"
        )
    }
    documented = {f.name for f in CATALOGUE["orders"].fields}
    undocumented = {c for c in columns - documented if not c.startswith(("_dlt_", "_ciklek_"))}
    assert len(undocumented) == MAX_EXTRA_COLUMNS and EXTRA_COLUMN in columns
    own = len({c for c in undocumented if c.startswith("f") and c[1:].isdigit()})
    assert own > MAX_EXTRA_COLUMNS - 10  # the sandbox's own extras took the first places
    assert {f"f{n}" for n in range(own)} <= undocumented  # first seen, first served
    [(f7, extra)] = sql(f"select f7, {EXTRA_COLUMN} from {ds}.orders where id = '{cases['wide']}'")
    assert f7 == "7"
    assert json.loads(extra) == {f"f{n}": n for n in range(own, WIDE)}

    # Lineage is dlt's own: no value from the server reached a _dlt_* column (dlt adds
    # _dlt_load_id to Arrow tables only when configured to; the forged fields never add them).
    assert not {"dlt_id", "dlt_load_id"} & columns
    [row] = sql(f"select * from {ds}.orders where id = '{cases['lineage']}'")
    assert "forged" not in row
    lineage = sorted(c for c in columns if c.startswith("_dlt_"))
    if "_dlt_load_id" in lineage:
        [(load_id,)] = sql(f"select _dlt_load_id from {ds}.orders where id = '{cases['lineage']}'")
        assert load_id in {r[0] for r in sql(f"select load_id from {ds}._dlt_loads")}


def test_poison_records_are_rejects_not_outages_in_duckdb(
    sandbox_factory: Callable[..., SandboxProcess], clean_env: Path
) -> None:
    sb = sandbox_factory(*SMALL)
    cases = poison(sb)
    done = run_main("sync", env=env_for(sb))
    assert done.returncode == 0, done.stderr + done.stdout
    db = clean_env / DEFAULT_DB
    assert_poison_handled(lambda sql: query(db, sql), "ciklek", cases)

    # The poison changes again: --strict makes the rejects exit 4, and the rest still loads.
    _patch(sb, cases["deep"], '{"deep": ' + DEEP + "}")
    strict = run_main("sync", "--strict", env=env_for(sb))
    assert strict.returncode == 4, strict.stderr + strict.stdout
    assert query(db, "select count(*) from ciklek.orders")[0][0] == ORDERS - REJECTED


def _pg(dsn: str) -> Query:
    def sql(text: str) -> list[tuple[Any, ...]]:
        import psycopg2

        con = psycopg2.connect(dsn)
        try:
            with con.cursor() as cur:
                cur.execute(text)
                return list(cur.fetchall())
        finally:
            con.close()

    return sql


@pytest.mark.postgres
def test_poison_records_are_rejects_not_outages_in_postgres(
    sandbox_factory: Callable[..., SandboxProcess], pg_schema: tuple[str, str]
) -> None:
    dsn, schema = pg_schema
    sb = sandbox_factory(*SMALL)
    cases = poison(sb)
    env = env_for(sb, DESTINATION__POSTGRES__CREDENTIALS=dsn)
    args = ("sync", "--destination", "postgres", "--dataset", schema)
    done = run_main(*args, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert_poison_handled(_pg(dsn), schema, cases)

    _patch(sb, cases["deep"], '{"deep": ' + DEEP + "}")
    strict = run_main(*args, "--strict", env=env)
    assert strict.returncode == 4, strict.stderr + strict.stdout


def test_the_column_cap_holds_across_runs(sandbox_factory, clean_env: Path) -> None:
    """A run bringing 150 undocumented fields, then another bringing 150 new ones: the table
    gets 200 such columns in all (the budget is seeded from the warehouse's schema), the rest
    folds into `_ciklek_extra`."""
    sb: SandboxProcess = sandbox_factory(*SMALL)
    ids = _order_ids(sb)
    env = env_for(sb)
    documented = {f.name for f in CATALOGUE["orders"].fields}

    def extra_columns() -> set[str]:
        rows = query(
            clean_env / DEFAULT_DB,
            "select column_name from information_schema.columns "
            "where table_schema = 'ciklek' and table_name = 'orders'",
        )
        names = {r[0] for r in rows}
        extra = {n for n in names - documented if not n.startswith(("_dlt_", "_ciklek_"))}
        return extra

    _patch(sb, ids[0], json.dumps({f"a{n}": n for n in range(150)}))
    first = run_main("sync", "--resources", "orders", env=env)
    assert first.returncode == 0, first.stderr
    after_first = extra_columns()
    assert len({n for n in after_first if n.startswith("a")}) == 150  # beside the API's own
    _patch(sb, ids[1], json.dumps({f"b{n}": n for n in range(150)}))
    second = run_main("sync", "--resources", "orders", env=env)
    assert second.returncode == 0, second.stderr
    assert len(extra_columns()) == MAX_EXTRA_COLUMNS
    folded = query(
        clean_env / DEFAULT_DB,
        f"select {EXTRA_COLUMN} from ciklek.orders where id = '{ids[1]}'",
    )[0][0]
    room = MAX_EXTRA_COLUMNS - len(after_first)
    assert len(json.loads(folded)) == 150 - room  # the b fields beyond the cap
