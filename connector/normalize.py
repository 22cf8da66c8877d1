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

import contextlib
import datetime as dt
import gc
import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from itertools import accumulate, chain, repeat
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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


_NONE = type(None)
_INT_OR_NONE = frozenset({int, _NONE})
_STR_OR_NONE = frozenset({str, _NONE})
_BOOL_OR_NONE = frozenset({bool, _NONE})
_LIST_OR_NONE = frozenset({list, _NONE})
_DICT = frozenset({dict})
_UNSCALED = pa.decimal128(38, 0)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _money_array(raw: list[Any]) -> pa.Array:
    """Integer cents → decimal128(38,2) without a Decimal per value when they fit 64 bits.

    A decimal128 stores its unscaled integer, which for scale 2 *is* the cents: int64 → decimal
    (scale 0) → the same 16 bytes viewed as scale 2. Exact by construction, no float anywhere.
    """
    try:
        return pa.array(raw, pa.int64()).cast(_UNSCALED).view(MONEY_TYPE)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):  # beyond int64: the slow path
        return pa.array([cents_to_decimal(v) for v in raw], MONEY_TYPE)


def _instants(raw: list[Any]) -> list[dt.datetime | None]:
    """parse_instant over a column, inlined for speed; any surprise → the checked path."""
    fromiso, utc = dt.datetime.fromisoformat, dt.UTC
    try:
        parsed = [None if v is None else fromiso(v) for v in raw]
        return [
            None if p is None else p.replace(tzinfo=utc) if p.tzinfo is None else p.astimezone(utc)
            for p in parsed
        ]
    except (TypeError, ValueError, OverflowError):
        return [parse_instant(v) for v in raw]  # raises Invalid for the first bad value


# The one timestamp shape that Arrow's parser and `datetime.fromisoformat` read identically
# (years 1000-9999, 0-6 fraction digits, `Z` or ±HH:MM): Arrow parses it ~4x faster. Calendar
# errors (2026-02-30) make Arrow's cast fail, and then Python decides, value by value.
_ISO_SHAPE = (
    r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_LAST_PY_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - _EPOCH) // (
    dt.timedelta(microseconds=1)
)


def _arrow_instants(raw: list[Any]) -> pa.Array | None:
    """Arrow's parse of a column of ISO strings, or None when Python must decide."""
    text = pa.array(raw, pa.string())
    if not pc.all(pc.match_substring_regex(text, _ISO_SHAPE)).as_py():
        return None
    try:
        parsed = text.cast(TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        return None
    newest = pc.max(parsed)
    if newest.is_valid and newest.value > _LAST_PY_US:  # past year 9999 in UTC: Python refuses
        return None
    return parsed


def _convert(kind: FieldKind, raw: list[Any]) -> tuple[pa.Array, dict[int, str]]:
    """One column of raw JSON values → a typed Arrow array plus {row: why it is invalid}.

    Fast paths check the column's Python types once, then let Arrow convert; anything unusual
    falls back to the per-value converter, which names the bad rows (left null here; their
    records are dropped by the caller).
    """
    types = set(map(type, raw))
    try:
        if kind == "string":
            if types <= _STR_OR_NONE:
                return pa.array(raw, pa.string()), {}
            return pa.array([_as_text(v) for v in raw], pa.string()), {}
        if kind == "money" and types <= _INT_OR_NONE:
            return _money_array(raw), {}
        if kind == "int" and types <= _INT_OR_NONE:
            return pa.array(raw, pa.int64()), {}
        if kind == "bool" and types <= _BOOL_OR_NONE:
            return pa.array(raw, pa.bool_()), {}
        if kind == "timestamp":
            fast = _arrow_instants(raw) if types <= _STR_OR_NONE else None
            if fast is not None:
                return fast, {}
            return pa.array(_instants(raw), TIMESTAMP_TYPE), {}
        if kind == "date":
            return pa.array([parse_date(v) for v in raw], pa.date32()), {}
    except (Invalid, OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    convert = CONVERTERS[kind]
    values: list[Any] = []
    bad: dict[int, str] = {}
    for row, value in enumerate(raw):
        try:
            values.append(convert(value))
        except Invalid as exc:
            bad[row] = str(exc)
            values.append(None)
    return pa.array(values, ARROW_TYPES[kind]), bad


class _Plan:
    """One output table: documented fields (typed), then fixed columns, then extras as text."""

    def __init__(
        self, fields: Sequence[FieldSpec], excluded: frozenset[str], skip: Iterable[str] = ()
    ) -> None:
        self.fields = [f for f in fields if f.name not in excluded]
        self.ignored = frozenset(f.name for f in fields) | excluded | frozenset(skip)

    def columns(self, rows: list[dict[str, Any]], fail: Any) -> list[pa.Array]:
        """Typed arrays for all rows; `fail(row, field_position, message)` for each bad value."""
        arrays = []
        for pos, spec in enumerate(self.fields):
            name = spec.name
            raw = list(map(dict.get, rows, repeat(name)))
            if spec.required and None in raw:
                for row, value in enumerate(raw):
                    if value is None:
                        fail(row, pos, f"{name} is missing")
            array, bad = _convert(spec.kind, raw)
            for row, message in bad.items():
                fail(row, pos, f"{name}: {message}")
            arrays.append(array)
        return arrays

    def extras(self, rows: list[dict[str, Any]]) -> dict[str, pa.Array]:
        """Undocumented fields of the kept rows, in first-seen order, as text (JSON if needed)."""
        extra = set().union(*rows) - self.ignored
        if not extra:
            return {}

        def first_seen(name: str) -> tuple[int, int]:
            row = next(n for n, r in enumerate(rows) if name in r)
            return row, list(rows[row]).index(name)

        names = sorted(extra, key=first_seen)
        return {k: pa.array([_as_text(r.get(k)) for r in rows], pa.string()) for k in names}


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


def _without_excluded(spec: ResourceSpec, record: Any) -> Any:
    """The record as quarantined: exclude_fields stay out of _ciklek_rejects.raw_json too."""
    if not spec.excluded or not isinstance(record, dict):
        return record
    dropped = _excluded_for(spec, spec.name)
    scrubbed = {k: v for k, v in record.items() if k not in dropped}
    child = spec.child
    if child is not None and isinstance(scrubbed.get(child.source_field), list):
        item_dropped = _excluded_for(spec, child.table)
        scrubbed[child.source_field] = [
            {k: v for k, v in item.items() if k not in item_dropped}
            if isinstance(item, dict)
            else item
            for item in scrubbed[child.source_field]
        ]
    return scrubbed


def _missing(ids: Iterable[Any]) -> bool:
    values = list(ids)
    return None in values or "" in values


def _keep(array: pa.Array, mask: pa.Array | None) -> pa.Array:
    return array if mask is None else array.filter(mask)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building acyclic JSON trees and columns.

    Parsed pages are trees of dicts and lists without cycles (refcounting frees them), yet their
    allocations keep triggering full collections that rescan every live record: a third of the
    conversion time. Nothing is leaked; collection simply resumes afterwards.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def build_batch(
    spec: ResourceSpec, records: Iterable[Any], seen_at: dt.datetime | None = None
) -> Batch:
    """Convert records (already de-duplicated by id) to Arrow tables plus reject rows.

    Column-wise: each field of all records is converted at once (Arrow does the typing), and a
    record with any bad value, or with any bad line item, is dropped whole and quarantined with
    the first reason in field order.
    """
    with gc_paused():
        return _build_batch(spec, records, seen_at or dt.datetime.now(dt.UTC))


def _build_batch(spec: ResourceSpec, records: Iterable[Any], seen_at: dt.datetime) -> Batch:
    batch = Batch()
    pk = spec.primary_key
    early: list[tuple[int, dict[str, Any]]] = []
    rows: list[dict[str, Any]] = []
    order: list[int] = []
    records = records if isinstance(records, list) else list(records)
    if set(map(type, records)) == {dict} and not _missing(map(dict.get, records, repeat(pk))):
        rows, order = records, list(range(len(records)))  # the usual case, checked in C
    else:
        for position, record in enumerate(records):
            if not isinstance(record, dict):
                reason = "record is not an object"
            elif record.get(pk) is None or record.get(pk) == "":
                reason = f"{pk} is missing"
            else:
                rows.append(record)
                order.append(position)
                continue
            scrubbed = _without_excluded(spec, record)
            early.append((position, reject_row(spec.name, scrubbed, reason, seen_at)))

    # row → (where the first problem is, why); the smallest key wins, as a row-by-row check
    # stopping at the first problem would report.
    errors: dict[int, tuple[tuple[int, int, int], str]] = {}

    def fail_at(row: int, key: tuple[int, int, int], message: str) -> None:
        current = errors.get(row)
        if current is None or key < current[0]:
            errors[row] = (key, message)

    child_spec = spec.child
    skip = (child_spec.source_field,) if child_spec else ()
    parent = _Plan(spec.fields, _excluded_for(spec, spec.name), skip)
    arrays = parent.columns(rows, lambda row, pos, msg: fail_at(row, (0, pos, 0), msg))

    items: list[dict[str, Any]] = []
    counts: list[int] = []  # dict items per row, in row order
    item_pos: list[int] | None = None  # position in the source list, when not 0..count-1
    child = None
    child_arrays: list[pa.Array] = []
    if child_spec is not None:
        source = child_spec.source_field
        lists = list(map(dict.get, rows, repeat(source)))
        flat: list[Any] | None = None
        if set(map(type, lists)) <= _LIST_OR_NONE:
            flat = list(chain.from_iterable(filter(None, lists)))
        if flat is not None and set(map(type, flat)) <= _DICT:  # the usual case
            items = flat
            counts = [len(x) if x else 0 for x in lists]
        else:
            item_pos = []
            for row, raw_items in enumerate(lists):
                raw_items = raw_items or []
                if not isinstance(raw_items, list):
                    fail_at(row, (1, -1, -1), f"{source} is not a list")
                    counts.append(0)
                    continue
                count = 0
                for n, item in enumerate(raw_items):
                    if isinstance(item, dict):
                        items.append(item)
                        item_pos.append(n)
                        count += 1
                    else:
                        fail_at(row, (1, n, -1), f"{source}[{n}] is not an object")
                counts.append(count)
        ends = list(accumulate(counts))

        def fail_item(k: int, pos: int, message: str) -> None:
            row = bisect_right(ends, k)
            n = item_pos[k] if item_pos is not None else k - (ends[row - 1] if row else 0)
            fail_at(row, (1, n, pos), f"{source}[{n}].{message}")

        child = _Plan(
            child_spec.fields,
            _excluded_for(spec, child_spec.table),
            (child_spec.parent_key, DELETED_COLUMN),
        )
        child_arrays = child.columns(items, fail_item)

    rejected = sorted(errors)
    for row in rejected:
        record = _without_excluded(spec, rows[row])
        early.append((order[row], reject_row(spec.name, record, errors[row][1], seen_at)))
    early.sort(key=lambda pair: pair[0])
    batch.rejects = [reject for _, reject in early]

    bad_rows = set(rejected)
    if len(bad_rows) == len(rows):
        return batch
    mask = None
    kept = rows
    if bad_rows:
        row_ok = [row not in bad_rows for row in range(len(rows))]
        mask = pa.array(row_ok, pa.bool_())
        kept = [r for r, ok in zip(rows, row_ok, strict=True) if ok]
    pk_kind = next((f.kind for f in parent.fields if f.name == pk), "string")
    parent_ids = [
        r[pk] if type(r[pk]) is str else str(_as_text(r[pk]) if pk_kind == "string" else r[pk])
        for r in kept
    ]
    batch.ids = parent_ids
    names = [f.name for f in parent.fields]
    columns = [_keep(a, mask) for a in arrays]
    if spec.cursor_field in names:
        batch.max_cursor = pc.max(columns[names.index(spec.cursor_field)]).as_py()
    extras = parent.extras(kept)
    batch.parent = pa.Table.from_arrays(
        [*columns, *extras.values()], names=[*names, *extras.keys()]
    )
    if child_spec is None or child is None:
        return batch

    item_mask = None
    kept_items, kept_counts = items, counts
    if bad_rows:
        item_ok = list(chain.from_iterable(map(repeat, row_ok, counts)))
        item_mask = pa.array(item_ok, pa.bool_())
        kept_items = [item for item, ok in zip(items, item_ok, strict=True) if ok]
        kept_counts = [c for c, ok in zip(counts, row_ok, strict=True) if ok]
    batch.child_items = len(kept_items)
    links = list(chain.from_iterable(map(repeat, parent_ids, kept_counts)))
    # Tombstones: an order with no items still enters the delete-insert, so old items go away.
    tombs = [pid for pid, count in zip(parent_ids, kept_counts, strict=True) if not count]
    n_tombs = len(tombs)
    child_names = [f.name for f in child.fields]
    child_columns = []
    for f, array in zip(child.fields, child_arrays, strict=True):
        array = _keep(array, item_mask)
        if n_tombs:
            tomb_ids = f.name == "id" and f.kind == "string"
            filler = pa.array(tombs, pa.string()) if tomb_ids else pa.nulls(n_tombs, array.type)
            array = pa.concat_arrays([array, filler])
        child_columns.append(array)
    child_columns.append(pa.array(links + tombs, pa.string()))
    child_columns.append(pa.array([False] * len(links) + [True] * n_tombs, pa.bool_()))
    child_names += [child_spec.parent_key, DELETED_COLUMN]
    for name, array in child.extras(kept_items).items():
        if n_tombs:
            array = pa.concat_arrays([array, pa.nulls(n_tombs, pa.string())])
        child_columns.append(array)
        child_names.append(name)
    batch.child = pa.Table.from_arrays(child_columns, names=child_names)
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
