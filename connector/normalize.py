"""Records → Arrow tables with declared types, exactly; bad records → rejects.

Why Arrow with an explicit schema: dlt's dict normaliser infers types row by row (≈2,000
orders/s here) and a first page of nulls can give a column the wrong type forever. Declared
Arrow types are fast and make the warehouse types a decision, not an accident:

- money: integer cents → DECIMAL(38,2) currency units through `Decimal`, never a float;
- timestamps: ISO 8601 with any offset → UTC instants (naive strings are taken as UTC);
- date-only fields → DATE;
- undocumented fields → text (JSON for non-strings), so a type that changes from page to page
  can never clash.

A record that breaks the data contract is quarantined whole (an order with a bad line item
included) so the warehouse keeps its previous, consistent version.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

import pyarrow as pa

from connector.catalogue import FieldKind, FieldSpec, ResourceSpec

MONEY_TYPE = pa.decimal128(38, 2)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
MAX_CENTS = 10**38  # DECIMAL(38,2) holds 36 integer digits
INT64_MAX = 2**63 - 1
_EXACT = Context(prec=40)  # the default 28 digits would round 29..38-digit amounts
DELETED_COLUMN = "_ciklek_deleted"

ARROW_TYPES: dict[FieldKind, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "money": MONEY_TYPE,
    "timestamp": TIMESTAMP_TYPE,
    "date": pa.date32(),
}
DLT_TYPES: dict[FieldKind, dict[str, Any]] = {
    "string": {"data_type": "text"},
    "int": {"data_type": "bigint"},
    "bool": {"data_type": "bool"},
    "money": {"data_type": "decimal", "precision": 38, "scale": 2},
    "timestamp": {"data_type": "timestamp", "timezone": True, "precision": 6},
    "date": {"data_type": "date"},
}
REJECTS_SCHEMA = pa.schema(
    [
        ("resource", pa.string()),
        ("record_id", pa.string()),
        ("reason", pa.string()),
        ("raw_json", pa.string()),
        ("seen_at", TIMESTAMP_TYPE),
    ]
)


class Invalid(ValueError):
    """One value broke the data contract; the message says which and why."""


def cents_to_decimal(value: Any) -> Decimal | None:
    """Integer cents → exact currency units. Floats, strings and bools are refused."""
    if value is None:
        return None
    if isinstance(value, Decimal) and value == value.to_integral_value():
        raise Invalid(f"money {value!s:.40}... does not fit DECIMAL(38,2)")  # a huge JSON integer
    if type(value) is not int:  # bool is an int subclass: refused too
        raise Invalid(f"money must be integer cents, got {type(value).__name__} {value!r:.40}")
    if not -MAX_CENTS < value < MAX_CENTS:
        raise Invalid(f"money {value} does not fit DECIMAL(38,2)")
    return Decimal(value).scaleb(-2, _EXACT)


def parse_instant(value: Any) -> dt.datetime | None:
    """ISO 8601 → aware UTC datetime (microseconds kept; naive input is taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"timestamp must be an ISO 8601 string, got {value!r:.40}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"timestamp {value!r:.60} is not ISO 8601") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise Invalid(f"timestamp {value!r:.60} is out of range in UTC") from None


def parse_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"date must be a YYYY-MM-DD string, got {value!r:.40}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"date {value!r:.40} is not YYYY-MM-DD") from None


def _as_int(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise Invalid(f"expected a 64-bit integer, got {value!r:.40}")
    return value


def _as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise Invalid(f"expected true/false, got {value!r:.40}")


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


CONVERTERS = {
    "string": _as_text,
    "int": _as_int,
    "bool": _as_bool,
    "money": cents_to_decimal,
    "timestamp": parse_instant,
    "date": parse_date,
}


@dataclass
class Batch:
    """What one chunk of records becomes."""

    parent: pa.Table | None = None
    child: pa.Table | None = None
    rejects: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    child_items: int = 0
    max_cursor: dt.datetime | None = None


class _Columns:
    """Column-wise accumulator: documented fields typed, undocumented fields as text."""

    def __init__(self, fields: Sequence[FieldSpec], excluded: frozenset[str]) -> None:
        self.fields = [f for f in fields if f.name not in excluded]
        self.excluded = excluded
        self.known = {f.name for f in fields}
        self.data: dict[str, list[Any]] = {f.name: [] for f in self.fields}
        self.extra: dict[str, list[Any]] = {}
        self.rows = 0

    def convert(self, record: dict[str, Any], prefix: str = "") -> tuple[list[Any], dict[str, Any]]:
        values = []
        for spec in self.fields:
            raw = record.get(spec.name)
            if raw is None and spec.required:
                raise Invalid(f"{prefix}{spec.name} is missing")
            try:
                values.append(CONVERTERS[spec.kind](raw))
            except Invalid as exc:
                raise Invalid(f"{prefix}{spec.name}: {exc}") from None
        return values, {
            k: _as_text(v)
            for k, v in record.items()
            if k not in self.known and k not in self.excluded
        }

    def append(self, values: list[Any], extras: dict[str, Any], more: dict[str, Any]) -> None:
        for spec, value in zip(self.fields, values, strict=True):
            self.data[spec.name].append(value)
        for name, value in {**extras, **more}.items():
            column = self.extra.get(name)
            if column is None:
                column = self.extra[name] = [None] * self.rows
            column.append(value)
        self.rows += 1
        for column in self.extra.values():
            if len(column) < self.rows:
                column.append(None)

    def table(self, fixed: Iterable[tuple[str, pa.DataType]] = ()) -> pa.Table:
        fixed = list(fixed)
        fixed_names = {name for name, _ in fixed}
        arrays = [pa.array(self.data[f.name], ARROW_TYPES[f.kind]) for f in self.fields]
        names = [f.name for f in self.fields]
        for name, typ in fixed:
            arrays.append(pa.array(self.extra.get(name, [None] * self.rows), typ))
            names.append(name)
        for name, column in self.extra.items():
            if name not in fixed_names:
                arrays.append(pa.array(column, pa.string()))
                names.append(name)
        return pa.Table.from_arrays(arrays, names=names)


def _excluded_for(spec: ResourceSpec, table: str) -> frozenset[str]:
    prefix = table + "."
    return frozenset(e[len(prefix) :] for e in spec.excluded if e.startswith(prefix))


def reject_row(resource: str, record: Any, reason: str, seen_at: dt.datetime) -> dict[str, Any]:
    record_id = record.get("id") if isinstance(record, dict) else None
    return {
        "resource": resource,
        "record_id": None if record_id is None else str(record_id),
        "reason": reason,
        "raw_json": json.dumps(record, default=str),
        "seen_at": seen_at,
    }


def build_batch(
    spec: ResourceSpec, records: Iterable[Any], seen_at: dt.datetime | None = None
) -> Batch:
    """Convert records (already de-duplicated by id) to Arrow tables plus reject rows."""
    seen_at = seen_at or dt.datetime.now(dt.UTC)
    batch = Batch()
    parent = _Columns(spec.fields, _excluded_for(spec, spec.name))
    child_spec = spec.child
    child = (
        _Columns(child_spec.fields, _excluded_for(spec, child_spec.table)) if child_spec else None
    )
    cursor_pos = next((i for i, f in enumerate(parent.fields) if f.name == spec.cursor_field), None)
    for record in records:
        if not isinstance(record, dict):
            batch.rejects.append(reject_row(spec.name, record, "record is not an object", seen_at))
            continue
        record_id = record.get(spec.primary_key)
        if record_id is None or record_id == "":
            batch.rejects.append(
                reject_row(spec.name, record, f"{spec.primary_key} is missing", seen_at)
            )
            continue
        try:
            values, extras = parent.convert(record)
            items: list[tuple[list[Any], dict[str, Any]]] = []
            if child_spec is not None and child is not None:
                extras.pop(child_spec.source_field, None)
                raw_items = record.get(child_spec.source_field) or []
                if not isinstance(raw_items, list):
                    raise Invalid(f"{child_spec.source_field} is not a list")
                for n, item in enumerate(raw_items):
                    where = f"{child_spec.source_field}[{n}]."
                    if not isinstance(item, dict):
                        raise Invalid(f"{where[:-1]} is not an object")
                    items.append(child.convert(item, where))
        except Invalid as exc:
            batch.rejects.append(reject_row(spec.name, record, str(exc), seen_at))
            continue
        parent_id = values[0] if parent.fields[0].name == spec.primary_key else str(record_id)
        parent.append(values, extras, {})
        batch.ids.append(str(parent_id))
        if cursor_pos is not None:
            cursor = values[cursor_pos]
            if cursor is not None and (batch.max_cursor is None or cursor > batch.max_cursor):
                batch.max_cursor = cursor
        if child is not None and child_spec is not None:
            link = {child_spec.parent_key: str(parent_id), DELETED_COLUMN: False}
            for item_values, item_extras in items:
                child.append(item_values, item_extras, link)
            batch.child_items += len(items)
            if not items:
                # Tombstone: puts the order_id in the delete-insert so its old items go away.
                tomb = [str(parent_id) if f.name == "id" else None for f in child.fields]
                child.append(tomb, {}, {**link, DELETED_COLUMN: True})
    if parent.rows:
        batch.parent = parent.table()
    if child is not None and child.rows and child_spec is not None:
        batch.child = child.table(
            [(child_spec.parent_key, pa.string()), (DELETED_COLUMN, pa.bool_())]
        )
    return batch


def rejects_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def dlt_columns(fields: Sequence[FieldSpec], excluded: frozenset[str]) -> list[dict[str, Any]]:
    """Declared dlt column hints, so the warehouse types never depend on the first page."""
    return [
        {"name": f.name, "nullable": not f.required, **DLT_TYPES[f.kind]}
        for f in fields
        if f.name not in excluded
    ]
