"""Record history (`history = ["orders"]`) against the real sandbox, in-process, on DuckDB and on
the PostgreSQL of `make test`: `orders_versions` holds exactly the versions the syncs saw,
`orders_history` dates them by their own `updated_at`, an order's line items come with each
version, a sweep's deletion ends a history, and history switched on later starts from the
current rows.
The two full-refresh tests refresh their own copies of one warehouse (`versioned`).

Instants are the `updated_at` the sandbox stamped on each change (read from its answer), so every
`valid_from`/`valid_to` is compared exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.runs.options import SyncOptions
from connector.runs.result import SyncResult
from connector.runs.sync import run_sync
from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import (
    api_records,
    assert_orders_match_api,
    copy_warehouse,
    fast_env,
    instant,
    set_env,
    shared_warehouse,
)

FLAGS = ("--orders", 60, "--customers", 10, "--products", 5, "--window-limit", 1_000_000)
US = dt.timedelta(microseconds=1)

# "The items of this order as it was at T": the version valid at T, and its line items.
ITEMS_AS_OF = """
select li.id, li.quantity
from {ds}.orders_history o
join {ds}.order_line_items_versions li
  on li.order_id = o.id and li.order_updated_at = o.updated_at
where o.id = %s and o.valid_from <= %s and (o.valid_to is null or o.valid_to > %s)
order by li.id
"""
STATUS_AS_OF = """
select status from {ds}.orders_history
where id = %s and valid_from <= %s and (valid_to is null or valid_to > %s)
"""


class Warehouse:
    """The run's destination, and SQL on it (`%s` parameters on both)."""

    def __init__(self, kind: str, dataset: str, dsn: str | None = None) -> None:
        self.kind, self.dataset, self.dsn = kind, dataset, dsn

    def options(self) -> dict[str, Any]:
        return {"destination": self.kind, "dataset": self.dataset}

    def sql(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        text = text.replace("{ds}", f'"{self.dataset}"')
        if self.kind == "postgres":
            import psycopg2

            with psycopg2.connect(self.dsn) as con, con.cursor() as cur:
                cur.execute(text, params)
                return [tuple(row) for row in cur.fetchall()]
        import duckdb

        with duckdb.connect(DEFAULT_DB, read_only=True) as con:
            con.execute("set timezone = 'UTC'")
            return [tuple(r) for r in con.execute(text.replace("%s", "?"), params).fetchall()]


def use(sandbox: SandboxProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, fast_env(sandbox, SOURCES__CIKLEK__HISTORY='["orders"]'))


@pytest.fixture
def sb(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> SandboxProcess:
    sandbox: SandboxProcess = sandbox_factory(*FLAGS)
    use(sandbox, monkeypatch)
    return sandbox


@pytest.fixture(params=["duckdb", "postgres"])
def wh(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield Warehouse("duckdb", "ciklek")
        return
    dsn, schema = request.getfixturevalue("pg_schema")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", dsn)
    yield Warehouse("postgres", schema, dsn)


def sync(wh: Warehouse | None = None, **options: object) -> SyncResult:
    opts: dict[str, Any] = {"resources": ["orders"], "progress": False, **options}
    if wh is not None:
        opts.update(wh.options())
    result = run_sync(SyncOptions(**opts))
    assert result.exit_code == 0, result.messages
    return result


def change(sb: SandboxProcess, rid: str, **fields: object) -> dt.datetime:
    """PATCH an order (the sandbox stamps a new updated_at, later than any it holds)."""
    response = sb.control_request("PATCH", f"records/orders/{rid}", json=fields)
    assert response.status_code == 200, response.text
    at = instant(response.json()["updated_at"])
    assert at is not None
    return at


def test_versions_and_history_of_an_order_across_three_syncs(
    sb: SandboxProcess, wh: Warehouse
) -> None:
    rid = sorted(api_records(sb))[0]
    items = api_records(sb)[rid]["line_items"]
    assert len(items) >= 1
    fewer = [{**items[0], "quantity": items[0]["quantity"] + 4}]  # one item left, more units

    t1 = change(sb, rid, status="pending")
    sync(wh)  # the first sync: every order's version, X pending
    t2 = change(sb, rid, status="confirmed", line_items=fewer)
    sync(wh)
    t3 = change(sb, rid, status="shipped")  # two changes before the next sync: the API lists
    t4 = change(sb, rid, status="shipped", shipped_at="2026-12-01T10:00:00Z")  # only the last
    third = sync(wh)
    assert third.report.outcome("orders").rows == 1
    idle = sync(wh)  # nothing changed: no version added, nothing rewritten
    assert idle.report.outcome("orders").rows == 0

    versions = wh.sql(
        "select updated_at, status from {ds}.orders_versions where id = %s order by 1", rid
    )
    assert versions == [(t1, "pending"), (t2, "confirmed"), (t4, "shipped")]  # t3: never seen
    assert wh.sql("select count(*), count(distinct id) from {ds}.orders_versions") == [(62, 60)]
    history = wh.sql(
        "select valid_from, valid_to, is_current, status from {ds}.orders_history "
        "where id = %s order by valid_from",
        rid,
    )
    assert history == [
        (t1, t2, False, "pending"),
        (t2, t4, False, "confirmed"),
        (t4, None, True, "shipped"),
    ]
    # As of an instant: before the first version seen, between, at the unseen change, after.
    as_of = {
        t1 - US: [],
        t1: [("pending",)],
        t1 + (t2 - t1) / 2: [("pending",)],
        t2: [("confirmed",)],
        t3: [("confirmed",)],  # the version of t3 was never listed: history cannot show it
        t4 - US: [("confirmed",)],
        t4 + dt.timedelta(days=1): [("shipped",)],
    }
    for at, status in as_of.items():
        assert wh.sql(STATUS_AS_OF, rid, at, at) == status, at
    # The order's line items as it was: all of them while pending, one with 4 more units since.
    all_items = sorted((i["id"], i["quantity"]) for i in items)
    assert wh.sql(ITEMS_AS_OF, rid, t1, t1) == all_items
    assert wh.sql(ITEMS_AS_OF, rid, t2, t2) == [(fewer[0]["id"], fewer[0]["quantity"])]
    assert wh.sql(ITEMS_AS_OF, rid, t4, t4) == [(fewer[0]["id"], fewer[0]["quantity"])]
    # The current tables are exactly as without history.
    assert wh.sql("select status from {ds}.orders where id = %s", rid) == [("shipped",)]
    assert wh.sql("select count(*) from {ds}.orders") == [(60,)]
    current = wh.sql("select count(*) from {ds}.orders_history where is_current")
    assert current == [(60,)]


def test_a_deleted_order_ends_its_history_and_a_recreated_one_starts_again(
    sb: SandboxProcess, wh: Warehouse
) -> None:
    rid = sorted(api_records(sb))[1]
    t1 = change(sb, rid, status="confirmed")
    sync(wh)
    assert sb.control_request("DELETE", f"records/orders/{rid}").status_code == 200
    swept = sync(wh, sweep=True)
    assert swept.report.outcome("orders").marked_deleted == 1
    ((deleted_at,),) = wh.sql("select _ciklek_deleted_at from {ds}.orders where id = %s", rid)
    assert deleted_at is not None
    history = "select valid_from, valid_to, is_current from {ds}.orders_history where id = %s"
    assert wh.sql(history + " order by 1", rid) == [(t1, deleted_at, False)]
    assert wh.sql(STATUS_AS_OF, rid, deleted_at - US, deleted_at - US) == [("confirmed",)]
    assert wh.sql(STATUS_AS_OF, rid, deleted_at, deleted_at) == []

    back = sb.control_request("POST", f"records/orders/{rid}/recreate")
    assert back.status_code == 200, back.text
    t2 = instant(back.json()["updated_at"])
    sync(wh)
    assert wh.sql(history + " order by 1", rid) == [
        (t1, deleted_at, False),  # ended at the deletion, not at the re-creation
        (t2, None, True),
    ]
    assert wh.sql(STATUS_AS_OF, rid, t2, t2) == [("confirmed",)]
    assert wh.sql("select _ciklek_deleted_at from {ds}.orders where id = %s", rid) == [(None,)]


def test_history_switched_on_later_starts_from_the_current_rows_once(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCES__CIKLEK__HISTORY")
    sync()
    rid = sorted(api_records(sb))[2]
    change(sb, rid, status="cancelled")
    sync()
    db = clean_env / DEFAULT_DB
    tables = {r[0] for r in query(db, "select table_name from information_schema.tables")}
    assert "orders_versions" not in tables  # off by default

    monkeypatch.setenv("SOURCES__CIKLEK__HISTORY", "orders")
    started = sync()
    assert started.log.requests == 1  # seeding sends nothing: it copies what the warehouse has
    assert "history started from the 60 current row(s)" in started.report.outcome("orders").notes
    pairs = "select id, updated_at from ciklek.{} order by 1, 2"
    assert query(db, pairs.format("orders_versions")) == query(db, pairs.format("orders"))
    item_keys = "select order_id, id, quantity from ciklek.{} order by 1, 2"
    assert query(db, item_keys.format("order_line_items_versions")) == query(
        db, item_keys.format("order_line_items")
    )
    linked = query(
        db,
        "select count(*) from ciklek.order_line_items_versions li join ciklek.orders o "
        "on o.id = li.order_id and o.updated_at = li.order_updated_at",
    )
    assert linked == query(db, "select count(*) from ciklek.order_line_items")

    again = sync()  # recorded: no second seed
    assert not any("history started" in n for n in again.report.outcome("orders").notes)
    t = change(sb, rid, status="delivered")
    sync()
    statuses = f"select status from ciklek.orders_history where id = '{rid}' order by valid_from"
    assert query(db, statuses) == [("cancelled",), ("delivered",)]
    assert query(db, "select count(*) from ciklek.orders_versions") == [(61,)]
    assert query(db, f"select max(valid_from) from ciklek.orders_history where id = '{rid}'") == [
        (t,)
    ]


Versioned = tuple[Path, SandboxProcess, str, dt.datetime]  # base dir, sandbox, order, its change


@pytest.fixture(scope="module")
def versioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versioned]:
    """A sandbox and a DuckDB warehouse (with its state directory) holding two versions of one
    order: both full-refresh tests refresh their own copy of it (`copy_of`) and only read the
    sandbox, so the syncs before the refresh are run once."""
    base = tmp_path_factory.mktemp("versioned")
    with shared_warehouse(base, FLAGS) as sandbox, pytest.MonkeyPatch.context() as mp:
        use(sandbox, mp)
        sync()
        rid = sorted(api_records(sandbox))[3]
        t1 = change(sandbox, rid, status="confirmed")
        sync()
        yield base, sandbox, rid, t1


def copy_of(versioned: Versioned, work: Path, monkeypatch: pytest.MonkeyPatch) -> Versioned:
    """This test's own copy of the warehouse and state directory of `versioned`."""
    base, sandbox, rid, t1 = versioned
    copy_warehouse(base, work, monkeypatch)
    use(sandbox, monkeypatch)
    return work, sandbox, rid, t1


@pytest.mark.parametrize("drop_first", [False, True], ids=["swap", "drop-first"])
def test_a_full_refresh_keeps_the_history(
    versioned: Versioned, clean_env: Path, monkeypatch: pytest.MonkeyPatch, drop_first: bool
) -> None:
    db = clean_env / DEFAULT_DB
    _, sb, rid, t1 = copy_of(versioned, clean_env, monkeypatch)
    before = query(db, "select id, updated_at from ciklek.orders_versions order by 1, 2")
    assert len(before) == 61

    refreshed = sync(full_refresh=True, drop_first=drop_first)
    # Swapped in beside the live tables, or (--drop-first) dropped and reloaded in place.
    assert "orders" in (refreshed.dropped if drop_first else refreshed.swapped)
    after = query(db, "select id, updated_at from ciklek.orders_versions order by 1, 2")
    assert after == before  # every version kept, none twice
    newest = f"select max(valid_from) from ciklek.orders_history where id = '{rid}'"
    assert query(db, newest) == [(t1,)]
    assert_orders_match_api(db, sb)


def test_a_bare_source_keeps_the_versions_too(
    sb: SandboxProcess, clean_env: Path, tmp_path: Path
) -> None:
    import dlt

    from connector import ciklek_source

    pipeline = dlt.pipeline(
        pipeline_name="bare_history",
        destination=dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb")),
        dataset_name="bare",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    pipeline.run(ciklek_source(resources=["orders"]))
    rid = sorted(api_records(sb))[4]
    t = change(sb, rid, status="cancelled")
    pipeline.run(ciklek_source(resources=["orders"]))
    pipeline.run(ciklek_source(resources=["orders"]))  # nothing new: no version twice
    db = tmp_path / "warehouse.duckdb"
    assert query(db, "select count(*), count(distinct (id, updated_at)) from bare.orders_versions")[
        0
    ] == (61, 61)
    mine = query(db, f"select updated_at, status from bare.orders_versions where id = '{rid}'")
    assert (t, "cancelled") in mine and len(mine) == 2
