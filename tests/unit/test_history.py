"""History and the look-back, piece by piece (no HTTP): every version a chunk fetches, the rows
of the versions tables, the versions the look-back keeps and skips, a sweep's re-read, the
settings, and the view's SQL on a real DuckDB (a dlt pipeline of its own, no sandbox)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import dlt
import pytest

from connector.api.responses import Page
from connector.catalogue import CATALOGUE
from connector.config.settings import DEFAULT_LOOKBACK_SECONDS, load_settings
from connector.errors import ConfigError
from connector.records.history import distinct, version_rows
from connector.records.normalize import build_batch
from connector.runs.source import _version_tables
from connector.timefmt import iso
from connector.traversal.page_loop import Chunk
from connector.traversal.run_config import RunConfig
from connector.traversal.state import (
    MAX_RECENT,
    ResourceState,
    begin,
    finish,
    remember,
    start,
)
from connector.traversal.sweep_state import SweepRecord, on_chunk
from connector.warehouse.history import columns_of, ensure_view, mark_versions, seed

ORDERS = CATALOGUE["orders"]
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def order(rid: str, seconds: float, status: str = "pending", items: int = 1) -> dict[str, Any]:
    return {
        "id": rid,
        "status": status,
        "total": 1000,
        "updated_at": iso(at(seconds)),
        "line_items": [
            {"id": f"{rid}-{n}", "quantity": n + 1, "unit_price": 500, "amount": 500}
            for n in range(items)
        ],
    }


def page(*records: dict[str, Any], next_cursor: str | None = None) -> Page:
    return Page(list(records), total=None, page=None, next_cursor=next_cursor, requested_after=None)


# --- a chunk keeps every version --------------------------------------------------------------


@pytest.mark.parametrize("history", [True, False])
def test_a_chunk_with_history_keeps_every_version_and_the_newest_for_the_current_table(
    history: bool,
) -> None:
    config = RunConfig(page_size=2, history=frozenset({"orders"} if history else ()))
    chunk = Chunk(ORDERS, ResourceState(), start("full", None), config)
    first, again = order("a", 1, "pending"), order("a", 5, "confirmed")  # updated mid-walk
    chunk.take(page(first, order("b", 2), next_cursor="c1"))
    chunk.take(page(again))
    assert chunk.records() == [order("b", 2), again]  # the current table: the newest only
    assert chunk.versions() == ([first, order("b", 2), again] if history else [])
    assert [top for top, _ in chunk.pages] == [at(2), at(5)]  # each page's newest, for remember


def test_versions_rows_link_each_line_item_to_its_order_version_and_drop_duplicates() -> None:
    newest = build_batch(ORDERS, [order("a", 5, "confirmed", items=1), order("b", 2, items=0)])
    older = build_batch(ORDERS, [order("a", 1, "pending", items=2)])
    parts = version_rows(ORDERS, [newest, older])
    assert [(p.table, p.key) for p in parts] == [
        ("orders_versions", ("id", "updated_at")),
        ("order_line_items_versions", ("order_id", "order_updated_at", "id")),
        ("orders_versions", ("id", "updated_at")),
        ("order_line_items_versions", ("order_id", "order_updated_at", "id")),
    ]
    replayed = version_rows(ORDERS, [build_batch(ORDERS, [order("a", 1, "pending", items=2)])])
    merged = {p.table: p.rows for p in distinct([*parts, *replayed])}
    versions = merged["orders_versions"].select(["id", "updated_at", "status"]).to_pylist()
    assert sorted((v["id"], v["updated_at"], v["status"]) for v in versions) == [
        ("a", at(1), "pending"),
        ("a", at(5), "confirmed"),
        ("b", at(2), "pending"),
    ]
    assert merged["orders_versions"].column("_ciklek_deleted_at").null_count == 3
    items = merged["order_line_items_versions"]
    assert "_ciklek_deleted" not in items.column_names  # no tombstone: b had no item
    rows = items.select(["order_id", "order_updated_at", "id", "quantity"]).to_pylist()
    assert sorted(tuple(r.values()) for r in rows) == [
        ("a", at(1), "a-0", 1),
        ("a", at(1), "a-1", 2),
        ("a", at(5), "a-0", 1),
    ]


# --- the look-back ------------------------------------------------------------------------------


def test_remember_keeps_the_versions_within_the_look_back_of_the_newest_seen() -> None:
    trav = start("incremental", iso(at(0)))
    old = (at(90), [("x", iso(at(50))), ("y", iso(at(90)))])  # wholly older: passed over
    new = (at(1000), [("y", iso(at(200))), ("z", iso(at(1000))), ("bad", "not-a-time")])
    remember(trav, [old, new], 900, watermark=iso(at(10)))
    assert trav.recent == [("z", iso(at(1000))), ("y", iso(at(200)))]
    # The next chunk moves the newest on: what falls out of the window goes.
    remember(trav, [(at(1150), [("w", iso(at(1150)))])], 900, watermark=iso(at(10)))
    assert trav.recent == [("w", iso(at(1150))), ("z", iso(at(1000)))]
    remember(trav, [], 0, watermark=None)  # no look-back: nothing changes
    assert len(trav.recent) == 2
    window = start("window", None)
    remember(window, [new], 900, watermark=None)
    assert window.recent == []  # a window or a sweep moves no watermark: nothing to remember


def test_remember_keeps_at_most_the_newest_versions() -> None:
    trav = start("full", None)
    versions = [(f"r{n}", iso(at(n / 10))) for n in range(MAX_RECENT + 50)]
    remember(trav, [(at(105), versions)], 900, watermark=None)
    assert len(trav.recent) == MAX_RECENT
    assert trav.recent[0] == versions[-1] and versions[0] not in trav.recent


def test_the_next_sync_re_reads_the_look_back_window_and_skips_what_it_saw() -> None:
    state = ResourceState(watermark=iso(at(1000)), rows_loaded=10)
    trav = start("incremental", iso(at(0)))
    trav.max_seen, trav.recent = iso(at(1000)), [("z", iso(at(1000)))]
    finish(state, trav, [("q", iso(at(1000)))])
    assert state.resume is not None and state.resume.recent == [("z", iso(at(1000)))]
    dumped = ResourceState.load(state.dump())  # it travels in dlt's state
    assert dumped.resume == state.resume
    nxt = begin(dumped, window=None, lookback_seconds=60, full_refresh=False)
    assert (nxt.kind, nxt.since, nxt.after, nxt.fresh) == ("incremental", iso(at(940)), None, False)
    assert nxt.skip == [("z", iso(at(1000))), ("q", iso(at(1000)))]
    resumed = begin(ResourceState.load(state.dump()), **_no_look_back())
    assert resumed.after is None and resumed.skip == [("q", iso(at(1000)))]


def _no_look_back() -> dict[str, Any]:
    return {"window": None, "lookback_seconds": 0, "full_refresh": False}


# --- a sweep's re-read --------------------------------------------------------------------------


def test_a_sweep_re_reads_what_changed_since_it_started_before_it_completes() -> None:
    state = ResourceState()
    sweep = begin(state, window=None, lookback_seconds=900, full_refresh=False, sweep=True)
    sweep.started_at, sweep.pages, sweep.last_total = iso(at(5000)), 7, 640
    assert on_chunk(state, sweep, [], True, "100.0", 900) is False  # not complete: re-reading
    reread = state.sweep
    assert reread is not None and reread is not sweep
    assert (reread.id, reread.kind, reread.since, reread.fresh) == (
        sweep.id,  # the same sweep: its threshold and quarantine go on
        "sweep",
        iso(at(4100)),
        False,
    )
    assert SweepRecord.load(state.sweeps).pending is None
    reread.pages, reread.last_total = 2, 30  # the re-read's own list is 30 records
    assert on_chunk(state, reread, [{"record_id": "q"}], True, "101.0", 900) is True
    pending = SweepRecord.load(state.sweeps).pending
    assert pending is not None
    assert (pending["threshold"], pending["last_total"], pending["pages"]) == ("100.0", 640, 9)
    assert (pending["reread_since"], pending["reread_pages"]) == (iso(at(4100)), 2)
    assert pending["quarantined"] == ["q"]
    # Without a look-back the walk completes the sweep at once, as before.
    plain = ResourceState()
    walk = begin(plain, window=None, lookback_seconds=0, full_refresh=False, sweep=True)
    assert on_chunk(plain, walk, [], True, "1.0", 0) is True


# --- settings -----------------------------------------------------------------------------------


def test_history_and_look_back_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.history, s.lookback_seconds) == ((), DEFAULT_LOOKBACK_SECONDS)
    assert DEFAULT_LOOKBACK_SECONDS == 900
    monkeypatch.setenv("SOURCES__CIKLEK__HISTORY", '["orders", "customers", "orders"]')
    assert load_settings().history == ("orders", "customers")
    assert load_settings(history=["products"]).history == ("products",)  # from Python
    for value, words in (
        ("order_line_items", "is kept with 'orders'"),
        ("invoices", "history: unknown resource 'invoices'"),
    ):
        monkeypatch.setenv("SOURCES__CIKLEK__HISTORY", value)
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert words in str(info.value)


# --- the SQL, on DuckDB ---------------------------------------------------------------------------


def _load(pipeline: dlt.Pipeline, *records: dict[str, Any]) -> None:
    batch = build_batch(ORDERS, list(records))
    assert batch.parent is not None
    parts = version_rows(ORDERS, [batch])

    @dlt.resource(name="versions")
    def versions() -> Any:
        yield from _version_tables(parts)

    pipeline.run(versions())


def test_the_history_view_is_re_created_when_the_versions_get_a_column(tmp_path: Path) -> None:
    pipeline = dlt.pipeline(
        pipeline_name="view",
        destination=dlt.destinations.duckdb(str(tmp_path / "w.duckdb")),
        dataset_name="ciklek",
        pipelines_dir=str(tmp_path / "p"),
    )
    _load(pipeline, order("a", 1, "pending"), order("b", 2))
    _load(pipeline, order("a", 1, "pending"), order("a", 9, "shipped"))  # a repeat, one new
    with pipeline.sql_client() as client:
        assert ensure_view(client, ORDERS) is True
        assert ensure_view(client, ORDERS) is False  # the same columns: left alone
        rows = client.execute_sql(
            "select id, status, valid_from, valid_to, is_current from ciklek.orders_history "
            "order by 1, 3"
        )
        assert [tuple(r) for r in rows] == [
            ("a", "pending", at(1), at(9), False),
            ("a", "shipped", at(9), None, True),
            ("b", "pending", at(2), None, True),
        ]
    _load(pipeline, {**order("b", 20), "gift_wrap": "yes"})  # an undocumented field: a column
    with pipeline.sql_client() as client:
        assert ensure_view(client, ORDERS) is True
        assert "gift_wrap" in columns_of(client, "orders_history")
        gone = "update ciklek.orders set _ciklek_deleted_at = %s where id = 'b'"
        client.execute_sql("create table ciklek.orders as select * from ciklek.orders_versions")
        client.execute_sql("delete from ciklek.orders where updated_at < %s", at(3))
        client.execute_sql(gone, at(30))
        mark_versions(client, ORDERS)  # a sweep's marks reach the version they ended
        ended = client.execute_sql(
            "select valid_from, valid_to, is_current from ciklek.orders_history where id = 'b' "
            "order by 1"
        )
        assert [tuple(r) for r in ended] == [(at(2), at(20), False), (at(20), at(30), False)]
        assert seed(client, dataclasses.replace(ORDERS, child=None)) == 2  # all there already
        assert client.execute_sql("select count(*) from ciklek.orders_versions")[0][0] == 4


def test_a_chunk_s_superseded_versions_are_kept_and_a_bad_one_quarantined() -> None:
    from connector.records.undocumented import TableColumns
    from connector.runs.source import _versions, _Walked

    first, bad, newest = (
        order("a", 1),
        {**order("a", 3), "total": "12.50"},
        order("a", 5, "shipped"),
    )
    other = order("b", 2)
    walked = _Walked(True, [other, newest], ["a", "b"], [], None, every=[first, other, bad, newest])
    batch = build_batch(ORDERS, walked.records)
    stamp = at(9)
    versions, rejects = _versions(ORDERS, batch, walked, TableColumns(), stamp)
    parents = [v for v in versions if v.table == "orders_versions"]
    rows = sorted(
        (r["id"], r["updated_at"], r["status"], r["_ciklek_synced_at"])
        for part in parents
        for r in part.rows.select(["id", "updated_at", "status", "_ciklek_synced_at"]).to_pylist()
    )
    assert rows == [
        ("a", at(1), "pending", stamp),
        ("a", at(5), "shipped", stamp),
        ("b", at(2), "pending", stamp),
    ]
    assert [(r["record_id"], r["reason"][:5]) for r in rejects] == [("a", "total")]
    # Without history: no versions, the newest's rejects only (none here).
    plain = _Walked(True, [other, newest], ["a", "b"], [], None)
    assert _versions(ORDERS, batch, plain, TableColumns(), stamp) == ([], [])


def test_a_money_field_kept_as_text_by_history_is_refused_even_on_a_full_refresh() -> None:
    from types import SimpleNamespace

    from connector.warehouse.checks import check_column_types

    settings = load_settings(money_fields=["orders.shipping_fee"], resources=["orders"])
    text = {"shipping_fee": {"name": "shipping_fee", "data_type": "text"}}
    decimal = {"shipping_fee": {"name": "shipping_fee", "data_type": "decimal"}}
    tables = {"orders": {"columns": decimal}, "orders_versions": {"columns": text}}
    pipeline = SimpleNamespace(default_schema_name="ciklek", default_schema=SimpleNamespace())
    pipeline.default_schema.tables = tables
    for refreshing in (set(), {"orders"}):
        with pytest.raises(ConfigError) as info:
            check_column_types(pipeline, settings, refreshing)  # type: ignore[arg-type]
        assert "orders_versions.shipping_fee" in str(info.value)
        assert "a full refresh keeps history" in str(info.value)
    tables["orders_versions"] = {"columns": decimal}
    check_column_types(pipeline, settings, set())  # type: ignore[arg-type]
