"""Schema changes as the records layer notes them: new columns, folds, type changes, missing
documented fields; and what `schema_changes = "freeze"` admits."""

from __future__ import annotations

import pytest

from connector.catalogue import CATALOGUE
from connector.config.settings import load_settings
from connector.errors import ConfigError
from connector.records.normalize import TYPE_CHANGE_SAMPLE, build_batch, missing_fields
from connector.records.undocumented import SchemaChange, TableColumns

PRODUCTS = CATALOGUE["products"]


def product(n: int, **extra: object) -> dict[str, object]:
    return {
        "id": f"p{n}", "sku": f"S{n}", "name": "Mug", "price": 1250, "currency": "EUR",
        "active": True, "created_at": "2026-01-01T00:00:00Z",
        "updated_at": f"2026-01-0{1 + n % 9}T00:00:00Z", **extra,
    }  # fmt: skip


def kinds(columns: TableColumns) -> list[tuple[str, str, str | None]]:
    return [(c.column, c.change, c.example_id) for c in columns.changes()]


def test_a_new_undocumented_field_is_one_new_column_with_an_example() -> None:
    first = TableColumns()
    first.seed("products", [])  # the table's first load: its columns are no change
    build_batch(PRODUCTS, [product(1, tier="gold")], columns=first)
    assert first.changes() == []
    known = TableColumns()
    known.seed("products", ["id", "sku", "old_extra"])
    build_batch(PRODUCTS, [product(1), product(2, tier="gold"), product(3, old_extra="x")],
                columns=known)  # fmt: skip
    build_batch(PRODUCTS, [product(4, tier="silver")], columns=known)  # noted once per run
    assert kinds(known) == [("tier", "new_column", "p2")]


def test_frozen_columns_fold_every_new_field_into_extra() -> None:
    known = TableColumns(frozen=True)
    known.seed("products", ["old_extra"])
    batch = build_batch(PRODUCTS, [product(1, tier="gold", old_extra="kept")], columns=known)
    assert batch.parent is not None
    assert "tier" not in batch.parent.column_names and "old_extra" in batch.parent.column_names
    assert batch.parent.column("_ciklek_extra").to_pylist() == ['{"tier":"gold"}']
    assert kinds(known) == [("tier", "folded_into_extra", "p1")]


def test_past_the_cap_a_field_folds_into_extra_and_says_so() -> None:
    known = TableColumns(cap=1)
    known.seed("products", ["id"])  # the table exists
    build_batch(PRODUCTS, [product(1, tier="gold", region="eu")], columns=known)
    assert kinds(known) == [("tier", "new_column", "p1"), ("region", "folded_into_extra", "p1")]


def test_a_type_change_is_every_value_of_a_batch_not_a_bad_record_or_two() -> None:
    known = TableColumns()
    few = [product(n, price="12.50") for n in range(TYPE_CHANGE_SAMPLE - 1)]
    assert len(build_batch(PRODUCTS, few, columns=known).rejects) == len(few)
    mixed = [product(n) for n in range(10)] + [product(11, price="12.50")]
    build_batch(PRODUCTS, mixed, columns=known)
    assert known.changes() == []  # rejects, not a change
    changed = [product(n, price=f"{n}.50") for n in range(TYPE_CHANGE_SAMPLE)]
    build_batch(PRODUCTS, changed, columns=known)
    assert kinds(known) == [("price", "type_changed", "p0")]


def test_a_documented_field_no_record_of_a_page_carries_is_missing() -> None:
    page = [product(1), product(2)]
    for record in page:
        del record["currency"]
    assert missing_fields(PRODUCTS, page) == [
        SchemaChange("products", "currency", "documented_field_missing", "p1")
    ]
    assert missing_fields(PRODUCTS, [product(3), {"id": "p4"}]) == []  # one record has them all
    assert missing_fields(PRODUCTS, [product(5), product(6)]) == []
    assert missing_fields(PRODUCTS, []) == []  # an empty page says nothing
    orders = CATALOGUE["orders"]
    order = {f.name: None for f in orders.fields} | {"id": "o1", "line_items": [{"id": "i1"}]}
    missing = {(c.table, c.column) for c in missing_fields(orders, [order])}
    assert ("order_line_items", "sku") in missing and ("orders", "status") not in missing


def test_schema_changes_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().schema_changes == "evolve"
    monkeypatch.setenv("SOURCES__CIKLEK__SCHEMA_CHANGES", "Freeze")
    assert load_settings().schema_changes == "freeze"
    monkeypatch.setenv("SOURCES__CIKLEK__SCHEMA_CHANGES", "ask")
    with pytest.raises(ConfigError, match='schema_changes must be "evolve" or "freeze"'):
        load_settings()
