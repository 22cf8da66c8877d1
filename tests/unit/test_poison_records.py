"""Poison records (issue 15 item 2): one record never stops a resource; it is a reject or loses a
field, and the rest of the page loads with warehouse-safe column names."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest

from connector.catalogue import build_catalogue
from connector.records.normalize import (
    DELETED_COLUMN,
    Invalid,
    build_batch,
    cents_to_decimal,
    parse_date,
    parse_instant,
)
from connector.records.undocumented import (
    EXTRA_COLUMN,
    MAX_EXTRA_COLUMNS,
    MAX_NESTING,
    TableColumns,
    bounded_json,
    column_name,
    key_text,
    too_deep,
)
from tests.unit.test_normalize import order

SEEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CATALOGUE = build_catalogue()
ORDERS = CATALOGUE["orders"]


def nested(depth: int, leaf: object = "x") -> object:
    value = leaf
    for n in range(depth):
        value = [value] if n % 2 else {"k": value}
    return value


def ids(batch: Any) -> list[str]:
    return batch.parent.column("id").to_pylist()


# --- names --------------------------------------------------------------------------------------


def test_undocumented_names_become_dlt_snake_case_columns() -> None:
    batch = build_batch(ORDERS, [order("o1", giftWrap="yes", **{"Ship Via": 3})], SEEN)
    assert batch.rejects == []
    assert batch.parent is not None
    names = batch.parent.schema.names
    assert "gift_wrap" in names and "ship_via" in names
    assert "giftWrap" not in names and "Ship Via" not in names
    assert batch.parent.column("gift_wrap").to_pylist() == ["yes"]
    assert batch.parent.column("ship_via").to_pylist() == ["3"]


def test_a_name_colliding_with_a_documented_column_rejects_that_record_only() -> None:
    bad = order("bad", Total=999)
    alone = order("alone")
    del alone["total"]
    alone["Total"] = 5  # no `total` in the record: still the documented column
    batch = build_batch(ORDERS, [order("good"), bad, alone], SEEN)
    assert ids(batch) == ["good"]
    assert [r["record_id"] for r in batch.rejects] == ["bad", "alone"]
    reason = batch.rejects[0]["reason"]
    assert "'Total'" in reason and "'total'" in reason
    raw = json.loads(str(batch.rejects[0]["raw_json"]))
    assert raw["Total"] == 999 and raw["total"] == 1080  # both values kept for a human
    assert batch.parent is not None
    assert [n for n in batch.parent.schema.names if n.lower() == "total"] == ["total"]


def test_two_undocumented_names_colliding_in_one_record_reject_it() -> None:
    bad = order("bad", Notes="A", notes="b")
    batch = build_batch(ORDERS, [order("good", notes="n"), bad], SEEN)
    assert ids(batch) == ["good"]
    [reject] = batch.rejects
    assert reject["record_id"] == "bad"
    assert reject["reason"] == "fields 'Notes' and 'notes' both land in column 'notes'"
    assert batch.parent is not None and batch.parent.column("notes").to_pylist() == ["n"]


def test_names_that_normalise_alike_in_different_records_share_one_column() -> None:
    batch = build_batch(ORDERS, [order("a", Notes="A"), order("b", notes="b"), order("c")], SEEN)
    assert batch.rejects == []
    assert batch.parent is not None
    assert batch.parent.column("notes").to_pylist() == ["A", "b", None]
    assert "Notes" not in batch.parent.schema.names


def test_a_line_item_name_colliding_with_the_link_column_rejects_its_order() -> None:
    bad = order("bad")
    bad["line_items"][1]["OrderId"] = "forged"
    batch = build_batch(ORDERS, [order("good"), bad], SEEN)
    assert ids(batch) == ["good"]
    assert batch.child is not None
    assert set(batch.child.column("order_id").to_pylist()) == {"good"}
    [reject] = batch.rejects
    assert reject["reason"].startswith("line_items[1].field 'OrderId' lands in column 'order_id'")


def test_an_excluded_field_stays_out_under_any_spelling() -> None:
    cat = build_catalogue(exclude_fields=["customers.email"])
    record = {"id": "c1", "Email": "ada@example.com", "updated_at": "2026-01-01T00:00:00Z"}
    batch = build_batch(cat["customers"], [record], SEEN)
    assert batch.rejects == [] and batch.parent is not None
    assert "ada@example.com" not in str(batch.parent.to_pylist())
    bad = {**record, "credit_limit": "1.00"}
    [reject] = build_batch(cat["customers"], [bad], SEEN).rejects
    assert "ada@example.com" not in str(reject["raw_json"])


def test_names_without_a_column_form_fold_into_the_extra_column() -> None:
    batch = build_batch(ORDERS, [order("o1", **{"": 1, "  ": "blank"}), order("o2")], SEEN)
    assert batch.rejects == [] and batch.parent is not None
    assert json.loads(batch.parent.column(EXTRA_COLUMN)[0].as_py()) == {"": 1, "  ": "blank"}
    assert batch.parent.column(EXTRA_COLUMN)[1].as_py() is None


# --- reserved names -----------------------------------------------------------------------------


def test_reserved_names_are_dropped_and_the_record_loads() -> None:
    forged = order(
        "o1",
        _dlt_id="forged-id",
        _dlt_load_id="1234.5",
        _DLT_LOAD_ID="x",
        _ciklek_extra="{}",
        _ciklek_deleted=True,
    )
    forged["line_items"][0]["_dlt_id"] = "item-forged"
    batch = build_batch(ORDERS, [forged, order("o2", _dlt_id="again")], SEEN)
    assert batch.rejects == []
    assert batch.parent is not None and batch.child is not None
    assert ids(batch) == ["o1", "o2"]
    for table in (batch.parent, batch.child):
        names = table.schema.names
        assert not [n for n in names if n.startswith("_dlt") or n == EXTRA_COLUMN], names
        assert "forged" not in str(table.to_pylist())
    assert batch.child.column(DELETED_COLUMN).to_pylist() == [False] * 4
    assert batch.dropped == {
        "_dlt_id": 3,  # two orders and one line item
        "_dlt_load_id": 1,
        "_DLT_LOAD_ID": 1,
        "_ciklek_extra": 1,
        "_ciklek_deleted": 1,
    }


# --- nesting ------------------------------------------------------------------------------------


def test_deep_values_are_detected_without_recursion() -> None:
    assert not too_deep(nested(MAX_NESTING))
    assert too_deep(nested(MAX_NESTING + 1))
    assert too_deep(nested(100_000))
    assert not too_deep("text") and not too_deep([]) and too_deep([], limit=0)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("deep", f"deep: nested deeper than {MAX_NESTING} levels"),
        ("total", f"total: nested deeper than {MAX_NESTING} levels"),
        ("number", f"number: nested deeper than {MAX_NESTING} levels"),
    ],
)
def test_a_field_nested_1000_deep_rejects_its_record_and_the_rest_loads(
    field: str, reason: str
) -> None:
    bad = order("bad", **{field: nested(1000)})
    batch = build_batch(ORDERS, [order("good"), bad, order("after")], SEEN)
    assert ids(batch) == ["good", "after"]
    [reject] = batch.rejects
    assert reject["record_id"] == "bad"
    assert reject["reason"] == reason
    raw = json.loads(str(reject["raw_json"]))  # the reject itself is written, cut short
    assert raw["id"] == "bad" and raw["number"] == ("ORD-bad" if field != "number" else raw[field])
    assert "[cut: nested too deep]" in str(reject["raw_json"])


def test_a_deep_line_item_field_rejects_its_order() -> None:
    bad = order("bad")
    bad["line_items"][0]["note"] = nested(1000)
    batch = build_batch(ORDERS, [order("good"), bad], SEEN)
    assert ids(batch) == ["good"]
    [reject] = batch.rejects
    assert reject["reason"] == f"line_items[0].note: nested deeper than {MAX_NESTING} levels"


def test_nesting_up_to_the_limit_loads_as_json_text() -> None:
    value = nested(MAX_NESTING)
    batch = build_batch(ORDERS, [order("o1", shape=value)], SEEN)
    assert batch.rejects == [] and batch.parent is not None
    assert json.loads(batch.parent.column("shape")[0].as_py()) == value


def test_raw_json_of_any_depth_serialises() -> None:
    text = bounded_json({"id": "x", "v": nested(100_000)})
    loaded = json.loads(text)
    assert loaded["id"] == "x"
    assert len(text) < 1_000
    assert json.loads(bounded_json({"a": [1, {"b": None}]})) == {"a": [1, {"b": None}]}


def test_a_deep_primary_key_is_a_reject_with_a_printable_id() -> None:
    batch = build_batch(ORDERS, [order("good"), order("x", id=nested(1000))], SEEN)
    assert ids(batch) == ["good"]
    [reject] = batch.rejects
    assert reject["reason"] == f"id: nested deeper than {MAX_NESTING} levels"
    assert isinstance(reject["record_id"], str) and len(reject["record_id"]) < 1_000


# --- too many columns ---------------------------------------------------------------------------


def wide(oid: str, names: range, prefix: str = "f") -> dict[str, Any]:
    return order(oid, **{f"{prefix}{n}": n for n in names})


def test_beyond_the_cap_undocumented_fields_fold_into_one_json_column() -> None:
    batch = build_batch(ORDERS, [wide("o1", range(1700)), order("o2")], SEEN)
    assert batch.rejects == [] and batch.parent is not None
    names = batch.parent.schema.names
    documented = [f.name for f in ORDERS.fields]
    own = [n for n in names if n.startswith("f")]
    assert own == [f"f{n}" for n in range(MAX_EXTRA_COLUMNS)]  # first seen first
    assert len(names) == len(documented) + MAX_EXTRA_COLUMNS + 1
    assert batch.parent.schema.field(EXTRA_COLUMN).type == pa.string()
    folded = json.loads(batch.parent.column(EXTRA_COLUMN)[0].as_py())
    assert folded == {f"f{n}": n for n in range(MAX_EXTRA_COLUMNS, 1700)}
    assert batch.parent.column(EXTRA_COLUMN)[1].as_py() is None
    assert batch.parent.column("f7").to_pylist() == ["7", None]


def test_the_cap_holds_across_batches_of_one_run() -> None:
    known = TableColumns()
    first = build_batch(ORDERS, [wide("o1", range(150))], SEEN, columns=known)
    assert first.parent is not None and EXTRA_COLUMN not in first.parent.schema.names
    second = build_batch(ORDERS, [wide("o2", range(100, 250))], SEEN, columns=known)
    assert second.parent is not None
    own = [n for n in second.parent.schema.names if n.startswith("f")]
    # f100..f149 already have columns; 50 more fit under the cap (f150..f199); the rest fold.
    assert own == [f"f{n}" for n in range(100, 200)]
    folded = json.loads(second.parent.column(EXTRA_COLUMN)[0].as_py())
    assert folded == {f"f{n}": n for n in range(200, 250)}
    # Without the shared object the cap holds per call only.
    alone = build_batch(ORDERS, [wide("o3", range(100, 250))], SEEN)
    assert alone.parent is not None and EXTRA_COLUMN not in alone.parent.schema.names


def test_a_seeded_schema_counts_its_undocumented_columns_only() -> None:
    known = TableColumns(cap=3)
    documented = [f.name for f in ORDERS.fields]
    known.seed("orders", [*documented, "_dlt_id", "_dlt_load_id", "oldCol", "older"])
    batch = build_batch(ORDERS, [order("o1", old_col=1, newer=2, newest=3)], SEEN, columns=known)
    assert batch.parent is not None
    assert [n for n in batch.parent.schema.names if n not in documented] == [
        "old_col",
        "newer",
        EXTRA_COLUMN,
    ]
    assert json.loads(batch.parent.column(EXTRA_COLUMN)[0].as_py()) == {"newest": 3}


def test_line_items_have_their_own_cap() -> None:
    record = order("o1")
    record["line_items"][0].update({f"g{n}": n for n in range(MAX_EXTRA_COLUMNS + 5)})
    batch = build_batch(ORDERS, [record, order("o2", line_items=[])], SEEN)
    assert batch.child is not None and batch.parent is not None
    assert EXTRA_COLUMN not in batch.parent.schema.names
    assert json.loads(batch.child.column(EXTRA_COLUMN)[0].as_py()) == {
        f"g{n}": n for n in range(MAX_EXTRA_COLUMNS, MAX_EXTRA_COLUMNS + 5)
    }
    assert batch.child.column(EXTRA_COLUMN).to_pylist()[1:] == [None, None]  # item 2, tombstone


def test_column_name_is_dlts_snake_case() -> None:
    assert column_name("Total") == "total"
    assert column_name("giftWrap") == "gift_wrap"
    assert column_name("_DLT_ID") == "_dlt_id"
    assert column_name("   ") == ""


def test_a_page_of_distinct_names_keeps_first_seen_order_and_folds_the_rest() -> None:
    # 30 records x 20 distinct names: 600 names, the many-names path of every step.
    records = [order(f"o{i}", **{f"r{i}_f{n}": n for n in range(20)}) for i in range(30)]
    records[7]["r7_f3"] = nested(1000)
    batch = build_batch(ORDERS, records, SEEN)
    assert [r["record_id"] for r in batch.rejects] == ["o7"]
    assert batch.rejects[0]["reason"] == f"r7_f3: nested deeper than {MAX_NESTING} levels"
    assert batch.parent is not None
    kept = [i for i in range(30) if i != 7]
    first_seen = [f"r{i}_f{n}" for i in kept for n in range(20)]
    own = [n for n in batch.parent.schema.names if n.startswith("r")]
    assert own == first_seen[:MAX_EXTRA_COLUMNS]
    extra = batch.parent.column(EXTRA_COLUMN).to_pylist()
    assert extra[: MAX_EXTRA_COLUMNS // 20] == [None] * (MAX_EXTRA_COLUMNS // 20)
    assert json.loads(extra[-1]) == {f"r29_f{n}": n for n in range(20)}


def test_ids_cursors_and_fingerprints_of_deep_values_never_recurse() -> None:
    deep = nested(1000)
    assert key_text("o1") == "o1" and key_text(17) == "17" and key_text([1, 2]) == "[1, 2]"
    assert key_text(deep).startswith('[{"k": [{"k"') and len(key_text(deep)) < 1_000
    record = {"b": 1, "a": [1, {"c": None}], "z": "é"}
    assert bounded_json(record, sort_keys=True) == json.dumps(record, sort_keys=True, default=str)
    assert bounded_json(record) == json.dumps(record, default=str)
    assert json.loads(bounded_json({"id": None, "v": deep}, sort_keys=True))["id"] is None


@pytest.mark.parametrize("convert", [parse_instant, parse_date, cents_to_decimal])
def test_converters_name_a_deep_value_briefly(convert: Any) -> None:
    with pytest.raises(Invalid, match=r"got .*\[\[\[\.\.\.\]\]\]") as caught:
        convert(_lists(1000))
    assert len(str(caught.value)) < 100


def _lists(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value
