"""Normalisation: exact money, UTC instants, declared types and whole-record rejects."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.api.responses import parse_json
from connector.catalogue import build_catalogue
from connector.records.normalize import (
    DELETED_COLUMN,
    MONEY_TYPE,
    TIMESTAMP_TYPE,
    Invalid,
    _arrow_instants,
    _convert,
    build_batch,
    cents_to_decimal,
    parse_date,
    parse_instant,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DECIMAL38 = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
TOO_BIG = st.integers(min_value=10**38, max_value=10**60)
SEEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CATALOGUE = build_catalogue()
ORDERS = CATALOGUE["orders"]


# --- money ------------------------------------------------------------------------------------


@given(INT64)
def test_every_int64_cent_value_becomes_the_exact_decimal(cents: int) -> None:
    value = cents_to_decimal(cents)
    assert value == Decimal(cents).scaleb(-2)
    assert value is not None and value * 100 == cents
    # Through Arrow too: the unscaled decimal128 value is the cents themselves.
    assert pa.array([value], MONEY_TYPE).to_pylist() == [value]


@given(DECIMAL38)
def test_up_to_36_integer_digits_stay_exact(cents: int) -> None:
    # Decimal's default 28-digit context would round these; the result must not.
    value = cents_to_decimal(cents)
    assert value is not None
    sign, digits, exponent = value.as_tuple()
    assert exponent == -2
    assert (-1) ** sign * int("".join(map(str, digits))) == cents
    assert str(value) == f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"
    assert pa.array([value], MONEY_TYPE).to_pylist() == [value]


@given(TOO_BIG, st.booleans())
def test_values_beyond_decimal_38_2_are_rejected(cents: int, negative: bool) -> None:
    with pytest.raises(Invalid, match="does not fit"):
        cents_to_decimal(-cents if negative else cents)


@pytest.mark.parametrize(
    ("cents", "expected"),
    [
        (1250, Decimal("12.50")),
        (-1250, Decimal("-12.50")),
        (0, Decimal("0.00")),
        (900719925474099301, Decimal("9007199254740993.01")),
        (10**38 - 1, Decimal("999999999999999999999999999999999999.99")),
        (None, None),
    ],
)
def test_money_examples(cents: int | None, expected: Decimal | None) -> None:
    assert cents_to_decimal(cents) == expected
    if expected is not None:
        assert str(cents_to_decimal(cents)) == str(expected)


@pytest.mark.parametrize("bad", [True, False, 12.5, 1250.0, "1250", "12.50", [1], {"c": 1}])
def test_money_that_is_not_integer_cents_is_rejected(bad: Any) -> None:
    with pytest.raises(Invalid, match="integer cents"):
        cents_to_decimal(bad)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.text() | st.booleans())
def test_no_float_string_or_bool_is_ever_money(bad: Any) -> None:
    with pytest.raises(Invalid):
        cents_to_decimal(bad)


def test_json_integers_beyond_the_parsers_limits_stay_exact_and_reject_only_their_field() -> None:
    # orjson refuses > 64-bit integers; the stdlib fallback keeps them exact, even past the
    # 4300-digit limit of int(), so one absurd value can never fail a whole page.
    huge = "9" * 5000
    body = f'{{"a": 18446744073709551617, "b": {huge}, "c": -5, "d": 1.5}}'.encode()
    parsed = parse_json(body)
    assert parsed["a"] == 2**64 + 1 and type(parsed["a"]) is int
    assert cents_to_decimal(parsed["a"]) == Decimal("184467440737095516.17")
    assert parsed["c"] == -5 and type(parsed["c"]) is int
    with pytest.raises(Invalid, match="does not fit"):
        cents_to_decimal(parsed["b"])
    with pytest.raises(Invalid, match="integer cents"):
        cents_to_decimal(parsed["d"])


@pytest.mark.parametrize(
    "value",
    [2**64 + 1, 10**38, -(2**63) - 1, -(10**38) + 1, 10**19, 12345678901234567890123],
)
def test_json_integers_beyond_64_bits_are_never_turned_into_floats(value: int) -> None:
    # orjson would silently give 1e+38 for 10**38; the parser must keep every digit.
    parsed = parse_json(f'{{"data": [{{"total": {value}, "ok": 1, "f": 2.5}}]}}'.encode())
    record = parsed["data"][0]
    assert type(record["total"]) is int and record["total"] == value
    assert record["ok"] == 1 and record["f"] == 2.5


# --- timestamps and dates ---------------------------------------------------------------------

INSTANTS = st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(9998, 12, 30)).map(
    lambda d: d.replace(tzinfo=dt.UTC)
)
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


def render(utc: dt.datetime, offset_minutes: int, digits: int, zulu: bool) -> str:
    """ISO 8601 as APIs write it: local wall time, 0-6 fraction digits, `Z` or `±HH:MM`."""
    local = (utc + dt.timedelta(minutes=offset_minutes)).replace(tzinfo=None)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    if offset_minutes == 0 and zulu:
        return text + "Z"
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@given(INSTANTS, OFFSETS, st.integers(min_value=0, max_value=6), st.booleans())
def test_any_offset_and_fraction_parses_to_the_exact_utc_instant(
    utc: dt.datetime, offset: int, digits: int, zulu: bool
) -> None:
    utc = utc.replace(microsecond=utc.microsecond - utc.microsecond % 10 ** (6 - digits))
    if zulu:
        offset = 0
    text = render(utc, offset, digits, zulu)
    parsed = parse_instant(text)
    assert parsed == utc
    assert parsed is not None and parsed.utcoffset() == dt.timedelta(0)
    assert parsed.microsecond == utc.microsecond
    # Through Arrow: stored as UTC microseconds, read back as the same instant.
    assert pa.array([parsed], TIMESTAMP_TYPE).to_pylist() == [utc]


@given(
    st.lists(
        st.tuples(INSTANTS, OFFSETS, st.integers(0, 6), st.booleans()), min_size=1, max_size=20
    )
)
def test_timestamp_columns_convert_exactly(
    values: list[tuple[dt.datetime, int, int, bool]],
) -> None:
    # build_batch converts whole columns (Arrow's parser on its fast path): same instants.
    texts, expected = [], []
    for utc, offset, digits, zulu in values:
        utc = utc.replace(microsecond=utc.microsecond - utc.microsecond % 10 ** (6 - digits))
        texts.append(render(utc, 0 if zulu else offset, digits, zulu))
        expected.append(utc)
    assert _arrow_instants([*texts, None]) is not None  # the fast path, not the fallback
    array, bad = _convert("timestamp", [*texts, None])
    assert bad == {}
    assert array.type == TIMESTAMP_TYPE
    assert array.to_pylist() == [*expected, None]


@st.composite
def near_iso(draw: Any) -> str:
    """ISO-shaped text with every part at or just past its limits (month 13, 24:00, +24:00)."""
    i = draw
    text = (
        f"{i(st.integers(0, 9999)):04d}-{i(st.integers(0, 13)):02d}-{i(st.integers(0, 32)):02d}"
        f"T{i(st.integers(0, 24)):02d}:{i(st.integers(0, 60)):02d}:{i(st.integers(0, 60)):02d}"
    )
    digits = i(st.integers(0, 7))
    if digits:
        text += "." + "".join(str(i(st.integers(0, 9))) for _ in range(digits))
    zone = i(st.sampled_from(["", "Z", "+", "-"]))
    if zone in "+-" and zone:
        zone += f"{i(st.integers(0, 24)):02d}:{i(st.integers(0, 60)):02d}"
    return text + zone


@settings(max_examples=300)
@given(near_iso())
def test_column_parser_agrees_with_parse_instant_on_any_digits(text: str) -> None:
    # Random digits: mostly impossible months, days, hours and offsets. Whatever the column path
    # accepts must be exactly what parse_instant returns, and what it refuses, parse_instant too.
    array, bad = _convert("timestamp", [text])
    try:
        expected = parse_instant(text)
    except Invalid:
        assert bad.keys() == {0}
        return
    assert bad == {}
    assert array.to_pylist() == [expected]


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_date_only_values(day: dt.date) -> None:
    assert parse_date(day.isoformat()) == day
    # A bare date where an instant is expected means 00:00 UTC.
    assert parse_instant(day.isoformat()) == dt.datetime(
        day.year, day.month, day.day, tzinfo=dt.UTC
    )


def test_naive_timestamps_are_utc_and_out_of_range_instants_are_invalid() -> None:
    assert parse_instant("2026-03-01T10:00:00") == dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
    assert parse_instant(None) is None
    for bad in ("2026-13-45T99:00:00Z", "yesterday", "", "0001-01-01T00:30:00+01:00", 17):
        with pytest.raises(Invalid):
            parse_instant(bad)
    for bad_date in ("2026-02-30", "2026-02-03T00:00:00Z", 20260203):
        with pytest.raises(Invalid):
            parse_date(bad_date)


# --- build_batch ------------------------------------------------------------------------------


def order(oid: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": oid,
        "number": f"ORD-{oid}",
        "customer_id": "c1",
        "status": "shipped",
        "currency": "USD",
        "subtotal": 1000,
        "tax": 80,
        "total": 1080,
        "delivery_date": "2026-02-03",
        "shipped_at": "2026-02-01T10:00:00.5+05:30",
        "created_at": "2026-01-31T10:00:00Z",
        "updated_at": "2026-02-01T12:00:00.123456-08:00",
        "line_items": [
            {
                "id": f"{oid}-1",
                "product_id": "p1",
                "sku": "S1",
                "quantity": 2,
                "unit_price": 250,
                "amount": 500,
            },
            {
                "id": f"{oid}-2",
                "product_id": "p2",
                "sku": "S2",
                "quantity": 1,
                "unit_price": 500,
                "amount": 500,
            },
        ],
    }
    record.update(changes)
    return record


def test_documented_fields_get_declared_types_and_exact_values() -> None:
    batch = build_batch(ORDERS, [order("o1", total=900719925474099301)], SEEN)
    assert batch.rejects == []
    assert batch.parent is not None and batch.child is not None
    schema = batch.parent.schema
    for name in ("subtotal", "tax", "total"):
        assert schema.field(name).type == MONEY_TYPE
    for name in ("shipped_at", "created_at", "updated_at"):
        assert schema.field(name).type == TIMESTAMP_TYPE
    assert schema.field("delivery_date").type == pa.date32()
    row = batch.parent.to_pylist()[0]
    assert row["total"] == Decimal("9007199254740993.01")
    assert row["shipped_at"] == dt.datetime(2026, 2, 1, 4, 30, 0, 500000, tzinfo=dt.UTC)
    assert row["updated_at"] == dt.datetime(2026, 2, 1, 20, 0, 0, 123456, tzinfo=dt.UTC)
    assert row["delivery_date"] == dt.date(2026, 2, 3)
    assert "line_items" not in schema.names
    items = batch.child.to_pylist()
    assert [(i["id"], i["order_id"], i["unit_price"], i[DELETED_COLUMN]) for i in items] == [
        ("o1-1", "o1", Decimal("2.50"), False),
        ("o1-2", "o1", Decimal("5.00"), False),
    ]
    assert batch.child.schema.field("amount").type == MONEY_TYPE
    assert batch.parent.column("id").to_pylist() == ["o1"]
    assert batch.max_cursor == dt.datetime(2026, 2, 1, 20, 0, 0, 123456, tzinfo=dt.UTC)


def test_a_bad_line_item_rejects_the_whole_order_and_none_of_its_items() -> None:
    bad = order("o2")
    bad["line_items"][1]["unit_price"] = "5.00"
    batch = build_batch(ORDERS, [order("o1"), bad, order("o3")], SEEN)
    assert batch.parent is not None and batch.child is not None
    assert batch.parent.column("id").to_pylist() == ["o1", "o3"]
    assert set(batch.child.column("order_id").to_pylist()) == {"o1", "o3"}
    assert not any(i.startswith("o2") for i in batch.child.column("id").to_pylist())
    assert len(batch.rejects) == 1
    reject = batch.rejects[0]
    assert reject["resource"] == "orders"
    assert reject["record_id"] == "o2"
    assert "line_items[1].unit_price" in reject["reason"]
    assert "integer cents" in reject["reason"]
    assert json.loads(reject["raw_json"]) == bad
    assert reject["seen_at"] == SEEN


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": None}, "id is missing"),
        ({"total": 10.8}, "total: money must be integer cents"),
        ({"tax": "0.80"}, "tax: money must be integer cents"),
        ({"total": 10**38}, "total: money 1000"),
        ({"created_at": "2026-13-45T99:00:00Z"}, "created_at: timestamp"),
        ({"delivery_date": "2026-02-30"}, "delivery_date: date"),
        ({"updated_at": None}, "updated_at is missing"),
        ({"line_items": "none"}, "line_items is not a list"),
    ],
)
def test_contract_breaches_reject_their_record_only(changes: dict[str, Any], reason: str) -> None:
    bad = order("bad", **changes)
    if changes.get("id", "x") is None:
        del bad["id"]
    batch = build_batch(ORDERS, [order("good"), bad], SEEN)
    assert batch.parent is not None
    assert batch.parent.column("id").to_pylist() == ["good"]
    assert len(batch.rejects) == 1
    assert reason in batch.rejects[0]["reason"]
    assert batch.rejects[0]["record_id"] == (None if "id" in changes else "bad")


def test_non_object_records_are_rejected() -> None:
    batch = build_batch(ORDERS, [order("good"), "garbage", 7], SEEN)
    assert batch.parent is not None and batch.parent.num_rows == 1
    assert [r["reason"] for r in batch.rejects] == ["record is not an object"] * 2


def test_undocumented_field_with_drifting_type_becomes_text() -> None:
    records = [
        order("a", ext_ref=123),
        order("b", ext_ref="X123"),
        order("c"),
        order("d", ext_ref={"k": [1, 2]}),
        order("e", ext_ref=True),
        order("f", ext_ref=None),
    ]
    batch = build_batch(ORDERS, records, SEEN)
    assert batch.rejects == []
    assert batch.parent is not None
    assert batch.parent.schema.field("ext_ref").type == pa.string()
    assert batch.parent.column("ext_ref").to_pylist() == [
        "123",
        "X123",
        None,
        '{"k":[1,2]}',
        "true",
        None,
    ]
    # An undocumented field on a line item lands on the line-item table, also as text.
    item_batch = build_batch(
        ORDERS, [order("g", line_items=[{"id": "g-1", "unit_price": 1, "gift": 5}])], SEEN
    )
    assert item_batch.child is not None
    assert item_batch.child.schema.field("gift").type == pa.string()
    assert item_batch.child.column("gift").to_pylist() == ["5"]


def test_excluded_fields_never_reach_a_table() -> None:
    cat = build_catalogue(exclude_fields=["customers.email", "order_line_items.sku"])
    customers = build_batch(
        cat["customers"],
        [
            {
                "id": "c1",
                "name": "Ada",
                "email": "ada@example.com",
                "credit_limit": 100,
                "updated_at": "2026-01-01T00:00:00Z",
            }
        ],
        SEEN,
    )
    assert customers.parent is not None
    assert "email" not in customers.parent.schema.names
    assert "ada@example.com" not in str(customers.parent.to_pylist())
    orders = build_batch(cat["orders"], [order("o1")], SEEN)
    assert orders.child is not None and "sku" not in orders.child.schema.names
    assert orders.parent is not None and "number" in orders.parent.schema.names


def test_excluded_fields_stay_out_of_quarantined_raw_json() -> None:
    cat = build_catalogue(exclude_fields=["customers.email", "order_line_items.sku"])
    bad_customer = {
        "id": "c1",
        "email": "ada@example.com",
        "credit_limit": "1.00",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    customers = build_batch(cat["customers"], [bad_customer], SEEN)
    assert customers.parent is None
    [reject] = customers.rejects
    assert "ada@example.com" not in reject["raw_json"]
    assert json.loads(reject["raw_json"]) == {
        "id": "c1",
        "credit_limit": "1.00",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    bad_order = order("o1", total="10.80")
    orders = build_batch(cat["orders"], [bad_order], SEEN)
    [reject] = orders.rejects
    raw = json.loads(reject["raw_json"])
    assert [sorted(item) for item in raw["line_items"]] == [
        ["amount", "id", "product_id", "quantity", "unit_price"]
    ] * 2
    assert raw["number"] == "ORD-o1"
    assert bad_order["line_items"][0]["sku"] == "S1"  # the caller's record is not modified


def test_an_all_null_batch_still_has_the_declared_types() -> None:
    record = {"id": "o1", "updated_at": "2026-01-01T00:00:00Z", "line_items": [{"id": "i1"}]}
    batch = build_batch(ORDERS, [record], SEEN)
    assert batch.parent is not None and batch.child is not None
    types = {f.name: f.type for f in batch.parent.schema}
    assert types["subtotal"] == types["tax"] == types["total"] == MONEY_TYPE
    assert types["shipped_at"] == types["created_at"] == TIMESTAMP_TYPE
    assert types["delivery_date"] == pa.date32()
    assert types["number"] == pa.string()
    child = {f.name: f.type for f in batch.child.schema}
    assert child["unit_price"] == child["amount"] == MONEY_TYPE
    assert child["quantity"] == pa.int64()
    assert batch.parent.column("total").to_pylist() == [None]


def test_order_without_items_gets_a_tombstone() -> None:
    batch = build_batch(ORDERS, [order("o1", line_items=[])], SEEN)
    assert batch.child is not None
    assert batch.child.select(["id", "order_id", DELETED_COLUMN]).to_pylist() == [
        {"id": "o1", "order_id": "o1", DELETED_COLUMN: True}
    ]


def test_money_fields_setting_retypes_an_undocumented_field() -> None:
    cat = build_catalogue(money_fields=["orders.shipping_fee", "order_line_items.discount"])
    record = order("o1", shipping_fee=500)
    record["line_items"][0]["discount"] = -25
    batch = build_batch(cat["orders"], [record, order("o2", shipping_fee="5.00")], SEEN)
    assert batch.parent is not None and batch.child is not None
    assert batch.parent.schema.field("shipping_fee").type == MONEY_TYPE
    assert batch.parent.column("shipping_fee").to_pylist() == [Decimal("5.00")]
    assert batch.child.column("discount").to_pylist()[0] == Decimal("-0.25")
    assert [r["record_id"] for r in batch.rejects] == ["o2"]


@settings(max_examples=60)
@given(st.lists(st.one_of(st.none(), INT64), min_size=1, max_size=30))
def test_money_columns_round_trip_exactly_through_build_batch(values: list[int | None]) -> None:
    records = [order(f"o{n}", total=v) for n, v in enumerate(values)]
    batch = build_batch(ORDERS, records, SEEN)
    assert batch.rejects == []
    assert batch.parent is not None
    assert batch.parent.column("total").to_pylist() == [
        None if v is None else Decimal(v).scaleb(-2) for v in values
    ]
