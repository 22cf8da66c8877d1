"""Records → Arrow tables with declared types, exactly; bad records → rejects.

Why Arrow with an explicit schema: dlt's dict normaliser infers types row by row (≈2,000
orders/s here) and a first page of nulls can give a column the wrong type forever. Declared
Arrow types are fast and make the warehouse types a decision, not an accident:

- money: integer cents → DECIMAL(38,2) currency units through `Decimal`, never a float;
- timestamps: ISO 8601 with any offset → UTC instants (naive strings are taken as UTC);
- date-only fields → DATE;
- undocumented fields → text (JSON for non-strings), so a type that changes from page to page
  can never clash; their names, nesting and number are kept warehouse-safe by
  `connector/records/undocumented.py` (a poison record is a reject, never an outage).

A record that breaks the data contract is quarantined whole (an order with a bad line item
included) so the warehouse keeps its previous, consistent version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import reprlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from itertools import accumulate, chain, compress, repeat
from typing import TypedDict, cast

import pyarrow as pa
import pyarrow.compute as pc

from connector.catalogue import ChildSpec, FieldKind, FieldSpec, ResourceSpec
from connector.records.undocumented import (
    EXTRA_COLUMN,
    MAX_NESTING,
    SchemaChange,
    TableColumns,
    bounded_json,
    column_name,
    is_reserved,
    too_deep,
)

Record = dict[str, object]  # one parsed JSON object; its values are untrusted
RejectRow = dict[str, object]  # one row of _ciklek_rejects (REJECTS_SCHEMA)


class ColumnHint(TypedDict, total=False):
    """A dlt column hint (the subset of dlt's TColumnSchema we declare)."""

    name: str
    data_type: str
    nullable: bool
    precision: int
    scale: int
    timezone: bool
    hard_delete: bool


MONEY_TYPE = pa.decimal128(38, 2)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
MAX_CENTS = 10**38  # DECIMAL(38,2) holds 36 integer digits
INT64_MAX = 2**63 - 1
_EXACT = Context(prec=40)  # the default 28 digits would round 29..38-digit amounts
DELETED_COLUMN = "_ciklek_deleted"
# A documented field's type changed when at least this many values of a batch, and all of them,
# no longer fit it (fewer could be a bad record or two).
TYPE_CHANGE_SAMPLE = 5
# Null on every row a load writes: loading a record says it exists upstream. `ciklek sweep` sets
# it on the rows of records deleted upstream (connector/runs/sweep.py); declared here, so the column
# is TIMESTAMP WITH TIME ZONE from the first load on, and a record that comes back is live again.
DELETED_AT_COLUMN = "_ciklek_deleted_at"

ARROW_TYPES: dict[FieldKind, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "money": MONEY_TYPE,
    "timestamp": TIMESTAMP_TYPE,
    "date": pa.date32(),
}
DLT_TYPES: dict[FieldKind, ColumnHint] = {
    "string": {"data_type": "text"},
    "int": {"data_type": "bigint"},
    "bool": {"data_type": "bool"},
    "money": {"data_type": "decimal", "precision": 38, "scale": 2},
    "timestamp": {"data_type": "timestamp", "timezone": True, "precision": 6},
    "date": {"data_type": "date"},
}
SCHEMA_CHANGES_SCHEMA = pa.schema(
    [
        ("detected_at", TIMESTAMP_TYPE),
        ("run_id", pa.string()),
        ("resource", pa.string()),
        ("table_name", pa.string()),
        ("column", pa.string()),
        ("change", pa.string()),
        ("example_record_id", pa.string()),
    ]
)
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


_REPR = reprlib.Repr()  # bounded in depth and width: a value nested 1,000 deep cannot recurse


def _brief(value: object) -> str:
    """The first 40 characters of the value's repr, for a reject reason."""
    return (_REPR.repr(value) if isinstance(value, (dict, list)) else repr(value))[:40]


def cents_to_decimal(value: object) -> Decimal | None:
    """Integer cents → exact currency units. Floats, strings and bools are refused."""
    if value is None:
        return None
    if isinstance(value, Decimal) and value == value.to_integral_value():
        raise Invalid(f"money {value!s:.40}... does not fit DECIMAL(38,2)")  # a huge JSON integer
    if type(value) is not int:  # bool is an int subclass: refused too
        raise Invalid(f"money must be integer cents, got {type(value).__name__} {_brief(value)}")
    if not -MAX_CENTS < value < MAX_CENTS:
        raise Invalid(f"money {value} does not fit DECIMAL(38,2)")
    return Decimal(value).scaleb(-2, _EXACT)


def parse_instant(value: object) -> dt.datetime | None:
    """ISO 8601 → aware UTC datetime (microseconds kept; naive input is taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"timestamp must be an ISO 8601 string, got {_brief(value)}")
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


def parse_date(value: object) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"date must be a YYYY-MM-DD string, got {_brief(value)}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"date {value!r:.40} is not YYYY-MM-DD") from None


def _as_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise Invalid(f"expected a 64-bit integer, got {_brief(value)}")
    return value


def _as_bool(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise Invalid(f"expected true/false, got {_brief(value)}")


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


CONVERTERS: dict[FieldKind, Callable[[object], object]] = {
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
    rejects: list[RejectRow] = field(default_factory=list)
    child_items: int = 0
    # Line items per parent row, in row order (the child table lists them so, then tombstones).
    child_counts: list[int] = field(default_factory=list)
    max_cursor: dt.datetime | None = None
    # Reserved fields (`_dlt_*`, `_ciklek_*`) dropped, never loaded: name → records carrying it.
    dropped: dict[str, int] = field(default_factory=dict)


_NONE = type(None)
_INT_OR_NONE = frozenset({int, _NONE})
_STR_OR_NONE = frozenset({str, _NONE})
_BOOL_OR_NONE = frozenset({bool, _NONE})
_LIST_OR_NONE = frozenset({list, _NONE})
_DICT = frozenset({dict})
_CONTAINERS = frozenset({dict, list})
_UNSCALED = pa.decimal128(38, 0)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _money_array(raw: list[object]) -> pa.Array:
    """Integer cents → decimal128(38,2) without a Decimal per value when they fit 64 bits.

    A decimal128 stores its unscaled integer, which for scale 2 *is* the cents: int64 → decimal
    (scale 0) → the same 16 bytes viewed as scale 2. Exact by construction, no float anywhere.
    """
    try:
        return pa.array(raw, pa.int64()).cast(_UNSCALED).view(MONEY_TYPE)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):  # beyond int64: the slow path
        return pa.array([cents_to_decimal(v) for v in raw], MONEY_TYPE)


def _instants(raw: list[object]) -> list[dt.datetime | None]:
    """parse_instant over a column, inlined for speed; any surprise → the checked path."""
    fromiso, utc = dt.datetime.fromisoformat, dt.UTC
    try:
        parsed = [None if v is None else fromiso(v) for v in raw]  # type: ignore[arg-type]
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


def _arrow_instants(raw: list[object]) -> pa.Array | None:
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


def _convert(kind: FieldKind, raw: list[object]) -> tuple[pa.Array, dict[int, str]]:
    """One column of raw JSON values → a typed Arrow array plus {row: why it is invalid}.

    A value nested deeper than MAX_NESTING is invalid whatever the kind: it is set aside before
    anything (repr, json.dumps) could recurse through it.
    """
    types = set(map(type, raw))
    if not types & _CONTAINERS:
        return _typed(kind, raw, types)
    deep = {row: f"nested deeper than {MAX_NESTING} levels" for row in _deep_rows(raw)}
    if deep:
        raw = [None if row in deep else value for row, value in enumerate(raw)]
        types = set(map(type, raw))
    array, bad = _typed(kind, raw, types)
    return array, {**bad, **deep}


def _deep_rows(raw: list[object]) -> list[int]:
    return [row for row, value in enumerate(raw) if type(value) in _CONTAINERS and too_deep(value)]


def _typed(kind: FieldKind, raw: list[object], types: set[type]) -> tuple[pa.Array, dict[int, str]]:
    """Fast paths check the column's Python types once, then let Arrow convert; anything unusual
    falls back to the per-value converter, which names the bad rows (left null here; their
    records are dropped by the caller).
    """
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
    values: list[object] = []
    bad: dict[int, str] = {}
    for row, value in enumerate(raw):
        try:
            values.append(convert(value))
        except Invalid as exc:
            bad[row] = str(exc)
            values.append(None)
    return pa.array(values, ARROW_TYPES[kind]), bad


Fail = Callable[[int, int, str], None]  # (row, field position, message)


@dataclass
class _Found:
    """Undocumented fields of one table's rows: where each lands, and what was dropped."""

    targets: dict[str, str] = field(default_factory=dict)  # field → column ("" folds)
    dropped: dict[str, int] = field(default_factory=dict)


class _Plan:
    """One output table: documented fields (typed), then fixed columns, then undocumented ones."""

    def __init__(
        self,
        table: str,
        fields: Sequence[FieldSpec],
        excluded: frozenset[str],
        fixed: Iterable[str] = (),
        skip: Iterable[str] = (),
        known: TableColumns | None = None,
    ) -> None:
        self.table = table
        self.known = known  # where schema changes are noted
        self.fields = [f for f in fields if f.name not in excluded]
        fixed = tuple(fixed)
        self.ignored = frozenset(f.name for f in fields) | excluded | frozenset((*fixed, *skip))
        # Warehouse columns no undocumented field may land in, and those the user excluded.
        documented = [*(f.name for f in self.fields), *fixed, EXTRA_COLUMN]
        self.taken = frozenset(map(column_name, documented))
        self.excluded = frozenset(map(column_name, excluded))

    def columns(self, rows: list[Record], fail: Fail) -> list[pa.Array]:
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
            values = len(raw) - raw.count(None)
            if values >= TYPE_CHANGE_SAMPLE and len(bad) == values and self.known is not None:
                # Every value of the batch no longer fits (a few bad records are rejects, not
                # a change): the API changed the field's type.
                example = _record_id(rows[min(bad)])
                self.known.note(SchemaChange(self.table, name, "type_changed", example))
            arrays.append(array)
        return arrays

    def screen(self, rows: list[Record], fail: Fail) -> _Found:
        """Name each undocumented field's column; report the rows that cannot load (a name
        collision, a value nested too deep) after every documented field's problems."""
        found = _Found()
        for name in set().union(*rows) - self.ignored:
            column = column_name(name)
            if column in self.excluded:
                continue  # `Email` where `email` is excluded stays out too
            if is_reserved(column):
                found.dropped[name] = sum(name in r for r in rows)
            else:
                found.targets[name] = column
        if found.targets:
            self._collisions(rows, found.targets, fail)
            self._nesting(rows, found.targets, fail)
        return found

    def _collisions(self, rows: list[Record], targets: dict[str, str], fail: Fail) -> None:
        by_column: dict[str, list[str]] = {}
        for name, column in targets.items():
            if column:
                by_column.setdefault(column, []).append(name)
        suspects = {
            name: column
            for column, names in by_column.items()
            if column in self.taken or len(names) > 1
            for name in names
        }
        if not suspects:
            return
        for row, record in enumerate(rows):
            seen: dict[str, str] = {}
            for name in sorted(suspects.keys() & record.keys()):
                column = suspects[name]
                if column in self.taken:
                    why = f"field {name!r} lands in column {column!r}, which is already defined"
                elif column in seen:
                    why = f"fields {seen[column]!r} and {name!r} both land in column {column!r}"
                else:
                    seen[column] = name
                    continue
                fail(row, len(self.fields), why)

    def _nesting(self, rows: list[Record], targets: dict[str, str], fail: Fail) -> None:
        deep: list[tuple[int, str]] = []
        if len(targets) <= 16:  # the usual few: a column at a time, in C
            for name in targets:
                raw = list(map(dict.get, rows, repeat(name)))
                if set(map(type, raw)) & _CONTAINERS:
                    deep += [(row, name) for row in _deep_rows(raw)]
        else:  # many names (a hostile page): one pass over every field
            for row, record in enumerate(rows):
                deep += [
                    (row, k)
                    for k, v in record.items()
                    if type(v) in _CONTAINERS and k in targets and too_deep(v)
                ]
        for row, name in sorted(deep, key=lambda hit: (hit[1], hit[0])):
            fail(row, len(self.fields), f"{name}: nested deeper than {MAX_NESTING} levels")

    def extras(
        self, rows: list[Record], found: _Found, known: TableColumns
    ) -> tuple[list[str], list[pa.Array]]:
        """Undocumented fields of the kept rows, in first-seen order, as text (JSON if needed);
        past the cap of columns per table, as one JSON object per row in `_ciklek_extra`."""
        present = set().union(*rows) & found.targets.keys() if found.targets else set()
        if not present:
            return [], []

        by_column: dict[str, list[str]] = {}
        for name in _first_seen(rows, present):
            by_column.setdefault(found.targets[name], []).append(name)
        before = known.columns_of(self.table)
        own = known.admit(self.table, filter(None, by_column), self.taken)
        names = [column for column in by_column if column in own]
        arrays = [_text_column(rows, by_column[column]) for column in names]
        folded = [
            name for column, group in by_column.items() if column not in own for name in group
        ]
        for column in names if known.existed(self.table) else ():
            if column not in before and column not in self.taken:
                example = _first_id(rows, by_column[column])
                known.note(SchemaChange(self.table, column, "new_column", example))
        for name in folded:
            known.note(SchemaChange(self.table, name, "folded_into_extra", _first_id(rows, [name])))
        if folded:
            names.append(EXTRA_COLUMN)
            arrays.append(_folded_column(rows, folded))
        return names, arrays


def _record_id(record: Record) -> str | None:
    value = record.get("id")
    return None if value is None else str(value)


def _first_id(rows: list[Record], names: list[str]) -> str | None:
    """The id of the first row that carries one of `names`: an example for a person to look at."""
    return next((_record_id(r) for r in rows if any(n in r for n in names)), None)


def _first_seen(rows: list[Record], names: set[str]) -> list[str]:
    """`names` in the order the rows first show them (row by row, then field by field)."""
    if len(names) <= 16:  # the usual few: a scan per name, in C

        def first(name: str) -> tuple[int, int]:
            row = next(n for n, r in enumerate(rows) if name in r)
            return row, list(rows[row]).index(name)

        return sorted(names, key=first)
    ordered: dict[str, None] = {}  # many names (a hostile page): one pass over every field
    for record in rows:
        ordered.update(dict.fromkeys(k for k in record if k in names and k not in ordered))
    return list(ordered)


def _text_column(rows: list[Record], names: list[str]) -> pa.Array:
    """One undocumented column; several names land in it only from different rows."""
    if len(names) == 1:
        return pa.array([_as_text(r.get(names[0])) for r in rows], pa.string())
    return pa.array(
        [_as_text(next((r[k] for k in names if k in r), None)) for r in rows], pa.string()
    )


def _folded_column(rows: list[Record], names: list[str]) -> pa.Array:
    """`_ciklek_extra`: the fields that got no column of their own, as a JSON object per row."""
    folded = frozenset(names)
    values = []
    for record in rows:
        extra = {k: v for k, v in record.items() if k in folded}
        values.append(json.dumps(extra, separators=(",", ":")) if extra else None)
    return pa.array(values, pa.string())


def _excluded_for(spec: ResourceSpec, table: str) -> frozenset[str]:
    prefix = table + "."
    return frozenset(e[len(prefix) :] for e in spec.excluded if e.startswith(prefix))


def reject_row(resource: str, record: object, reason: str, seen_at: dt.datetime) -> RejectRow:
    """A `_ciklek_rejects` row; its raw JSON is cut at a safe depth, so writing never fails."""
    record_id = record.get("id") if isinstance(record, dict) else None
    if record_id is not None and not isinstance(record_id, (str, int, float, bool)):
        record_id = bounded_json(record_id)
    return {
        "resource": resource,
        "record_id": None if record_id is None else str(record_id),
        "reason": reason,
        "raw_json": bounded_json(record),
        "seen_at": seen_at,
    }


def _scrub(record: Record, excluded: frozenset[str]) -> Record:
    dropped = excluded | frozenset(map(column_name, excluded))
    return {k: v for k, v in record.items() if k not in dropped and column_name(k) not in dropped}


def _without_excluded(spec: ResourceSpec, record: object) -> object:
    """The record as quarantined: exclude_fields stay out of _ciklek_rejects.raw_json too."""
    if not spec.excluded or not isinstance(record, dict):
        return record
    scrubbed = _scrub(record, _excluded_for(spec, spec.name))
    child = spec.child
    items = scrubbed.get(child.source_field) if child is not None else None
    if child is not None and isinstance(items, list):
        item_excluded = _excluded_for(spec, child.table)
        scrubbed[child.source_field] = [
            _scrub(item, item_excluded) if isinstance(item, dict) else item for item in items
        ]
    return scrubbed


def _missing(ids: Iterable[object]) -> bool:
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


class _Errors:
    """row → (where its first problem is, why): the smallest key wins, as a row-by-row check
    stopping at the first problem would report. Keys: (0, field, 0) for the record's own
    fields, (1, item, field) for its line items."""

    def __init__(self) -> None:
        self.by_row: dict[int, tuple[tuple[int, int, int], str]] = {}

    def at(self, row: int, key: tuple[int, int, int], message: str) -> None:
        current = self.by_row.get(row)
        if current is None or key < current[0]:
            self.by_row[row] = (key, message)

    def parent(self, row: int, pos: int, message: str) -> None:
        self.at(row, (0, pos, 0), message)

    def kept(self, count: int) -> list[bool] | None:
        """Which of `count` rows load (None: all of them)."""
        if not self.by_row:
            return None
        return [row not in self.by_row for row in range(count)]


def _split(
    spec: ResourceSpec, records: list[object], seen_at: dt.datetime
) -> tuple[list[Record], list[int], list[tuple[int, RejectRow]]]:
    """Objects with an id (and their positions) apart from what is rejected before typing."""
    pk = spec.primary_key
    if set(map(type, records)) == {dict} and not _missing(map(dict.get, records, repeat(pk))):  # type: ignore[arg-type]
        return records, list(range(len(records))), []  # type: ignore[return-value]
    rows: list[Record] = []
    order: list[int] = []
    early: list[tuple[int, RejectRow]] = []
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
    return rows, order, early


def _flatten(
    source: str, rows: list[Record], errors: _Errors
) -> tuple[list[Record], list[int], list[int] | None]:
    """Every row's items in one list, the count per row, and each item's index in its row's
    list when it is not simply 0..count-1 (non-object items are skipped and reported)."""
    lists = list(map(dict.get, rows, repeat(source)))
    if set(map(type, lists)) <= _LIST_OR_NONE:
        item_lists = cast(list[list[Record] | None], lists)
        flat = list(chain.from_iterable(filter(None, item_lists)))
        if set(map(type, flat)) <= _DICT:  # the usual case
            return flat, [len(x) if x else 0 for x in item_lists], None
    items: list[Record] = []
    counts: list[int] = []
    item_pos: list[int] = []
    for row, raw_items in enumerate(lists):
        raw_items = raw_items or []
        if not isinstance(raw_items, list):
            errors.at(row, (1, -1, -1), f"{source} is not a list")
            counts.append(0)
            continue
        count = 0
        for n, item in enumerate(raw_items):
            if isinstance(item, dict):
                items.append(item)
                item_pos.append(n)
                count += 1
            else:
                errors.at(row, (1, n, -1), f"{source}[{n}] is not an object")
        counts.append(count)
    return items, counts, item_pos


class _Children:
    """A resource's nested list (an order's line items): flattened across rows, typed
    column-wise, and linked back to the row each item came from."""

    def __init__(
        self,
        spec: ResourceSpec,
        child: ChildSpec,
        rows: list[Record],
        errors: _Errors,
        known: TableColumns,
    ):
        self.spec = child
        self.errors = errors
        self.plan = _Plan(
            child.table,
            child.fields,
            _excluded_for(spec, child.table),
            fixed=(child.parent_key, DELETED_COLUMN),
            known=known,
        )
        self.items, self.counts, self.item_pos = _flatten(child.source_field, rows, errors)
        self.ends = list(accumulate(self.counts))
        self.arrays = self.plan.columns(self.items, self.fail)
        self.found = self.plan.screen(self.items, self.fail)

    def fail(self, k: int, pos: int, message: str) -> None:
        """A problem of item `k` (in the flat list) is a problem of the row it came from."""
        row = bisect_right(self.ends, k)
        n = (
            self.item_pos[k]
            if self.item_pos is not None
            else k - (self.ends[row - 1] if row else 0)
        )
        self.errors.at(row, (1, n, pos), f"{self.spec.source_field}[{n}].{message}")

    def table(
        self, row_ok: list[bool] | None, parent_ids: list[str], known: TableColumns
    ) -> tuple[pa.Table, int, list[int]]:
        """The child table of the kept rows, plus a tombstone per row without items: such a row
        still enters the delete-insert, so its old items go away. Returns the table, the
        number of real items and the items per kept row."""
        items, counts, mask = self.items, self.counts, None
        if row_ok is not None:
            item_ok = list(chain.from_iterable(map(repeat, row_ok, counts)))
            mask = pa.array(item_ok, pa.bool_())
            items = list(compress(items, item_ok))
            counts = list(compress(counts, row_ok))
        links = list(chain.from_iterable(map(repeat, parent_ids, counts)))
        tombs = [pid for pid, count in zip(parent_ids, counts, strict=True) if not count]
        columns = [
            _with_tombs(f, _keep(array, mask), tombs)
            for f, array in zip(self.plan.fields, self.arrays, strict=True)
        ]
        columns.append(pa.array(links + tombs, pa.string()))
        columns.append(pa.array([False] * len(links) + [True] * len(tombs), pa.bool_()))
        names = [f.name for f in self.plan.fields] + [self.spec.parent_key, DELETED_COLUMN]
        extra_names, extra_arrays = self.plan.extras(items, self.found, known)
        columns += [_pad(array, len(tombs)) for array in extra_arrays]
        return pa.Table.from_arrays(columns, names=names + extra_names), len(items), counts


def _with_tombs(spec: FieldSpec, array: pa.Array, tombs: list[str]) -> pa.Array:
    """A tombstone's `id` is its parent's id (a string id column), every other field null."""
    if not tombs:
        return array
    tomb_ids = spec.name == "id" and spec.kind == "string"
    filler = pa.array(tombs, pa.string()) if tomb_ids else pa.nulls(len(tombs), array.type)
    return pa.concat_arrays([array, filler])


def _pad(array: pa.Array, count: int) -> pa.Array:
    return pa.concat_arrays([array, pa.nulls(count, array.type)]) if count else array


def _text_ids(rows: list[Record], pk: str, kind: FieldKind) -> list[str]:
    """The parent ids as the child table's link column stores them (text)."""
    ids = list(map(dict.get, rows, repeat(pk)))
    if set(map(type, ids)) == {str}:
        return ids  # type: ignore[return-value]
    return [v if type(v) is str else str(_as_text(v) if kind == "string" else v) for v in ids]


def _rejects(
    spec: ResourceSpec,
    rows: list[Record],
    order: list[int],
    errors: _Errors,
    early: list[tuple[int, RejectRow]],
    seen_at: dt.datetime,
) -> list[RejectRow]:
    """Every reject of the chunk, in the order the records came."""
    for row, (_, reason) in errors.by_row.items():
        record = _without_excluded(spec, rows[row])
        early.append((order[row], reject_row(spec.name, record, reason, seen_at)))
    early.sort(key=lambda pair: pair[0])
    return [reject for _, reject in early]


def build_batch(
    spec: ResourceSpec,
    records: Iterable[object],
    seen_at: dt.datetime | None = None,
    *,
    columns: TableColumns | None = None,
) -> Batch:
    """Convert records (already de-duplicated by id) to Arrow tables plus reject rows.

    Column-wise: each field of all records is converted at once (Arrow does the typing), and a
    record with any bad value, or with any bad line item, is dropped whole and quarantined with
    the first reason in field order. `columns` remembers the undocumented columns each table
    already has across the batches of a run (see `TableColumns`); without it the cap on
    undocumented columns holds per call.
    """
    with gc_paused():
        records = records if isinstance(records, list) else list(records)
        seen_at = seen_at or dt.datetime.now(dt.UTC)
        return _build_batch(spec, records, seen_at, columns or TableColumns())


def _build_batch(
    spec: ResourceSpec, records: list[object], seen_at: dt.datetime, known: TableColumns
) -> Batch:
    rows, order, early = _split(spec, records, seen_at)
    errors = _Errors()
    skip = (spec.child.source_field,) if spec.child else ()
    parent = _Plan(spec.name, spec.fields, _excluded_for(spec, spec.name), skip=skip, known=known)
    arrays = parent.columns(rows, errors.parent)
    found = parent.screen(rows, errors.parent)
    child = _Children(spec, spec.child, rows, errors, known) if spec.child else None
    batch = Batch(rejects=_rejects(spec, rows, order, errors, early, seen_at))
    batch.dropped = dict(found.dropped)
    if child is not None:
        for name, count in child.found.dropped.items():
            batch.dropped[name] = batch.dropped.get(name, 0) + count
    if len(errors.by_row) == len(rows):
        return batch
    row_ok = errors.kept(len(rows))
    mask = None if row_ok is None else pa.array(row_ok, pa.bool_())
    kept = rows if row_ok is None else list(compress(rows, row_ok))
    names = [f.name for f in parent.fields]
    columns = [_keep(a, mask) for a in arrays]
    if spec.cursor_field in names:
        batch.max_cursor = pc.max(columns[names.index(spec.cursor_field)]).as_py()
    extra_names, extra_arrays = parent.extras(kept, found, known)
    batch.parent = pa.Table.from_arrays([*columns, *extra_arrays], names=[*names, *extra_names])
    if child is not None:
        pk_kind: FieldKind = next(
            (f.kind for f in parent.fields if f.name == spec.primary_key), "string"
        )
        parent_ids = _text_ids(kept, spec.primary_key, pk_kind)
        batch.child, batch.child_items, batch.child_counts = child.table(row_ok, parent_ids, known)
    return batch


def with_deleted_at(table: pa.Table) -> pa.Table:
    """The table with `_ciklek_deleted_at` null on every row (see DELETED_AT_COLUMN)."""
    return table.append_column(DELETED_AT_COLUMN, pa.nulls(table.num_rows, TIMESTAMP_TYPE))


def rejects_table(rows: Sequence[Mapping[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=REJECTS_SCHEMA)


def dlt_columns(fields: Sequence[FieldSpec], excluded: frozenset[str]) -> list[ColumnHint]:
    """Declared dlt column hints, so the warehouse types never depend on the first page."""
    return [
        {"name": f.name, "nullable": not f.required, **DLT_TYPES[f.kind]}
        for f in fields
        if f.name not in excluded
    ]


def missing_fields(spec: ResourceSpec, records: Sequence[object]) -> list[SchemaChange]:
    """`documented_field_missing`: documented fields that no record of a page carries (its line
    items' fields too). A page without records says nothing."""
    rows = [r for r in records if isinstance(r, dict)]
    if not rows:
        return []
    keys = set().union(*rows)
    excluded = _excluded_for(spec, spec.name)
    example = _record_id(rows[0])
    found = [
        SchemaChange(spec.name, f.name, "documented_field_missing", example)
        for f in spec.fields
        if f.name not in keys and f.name not in excluded
    ]
    child = spec.child
    if child is None:
        return found
    items = [i for r in rows for i in (r.get(child.source_field) or ()) if isinstance(i, dict)]
    if not items:
        return found
    item_keys = set().union(*items)
    item_excluded = _excluded_for(spec, child.table)
    return found + [
        SchemaChange(child.table, f.name, "documented_field_missing", example)
        for f in child.fields
        if f.name not in item_keys and f.name not in item_excluded
    ]


def schema_change_row(
    change: SchemaChange, run_id: str, resource: str, at: dt.datetime
) -> dict[str, object]:
    """One row of `_ciklek_schema_changes`."""
    return {
        "detected_at": at,
        "run_id": run_id,
        "resource": resource,
        "table_name": change.table,
        "column": change.column,
        "change": change.change,
        "example_record_id": change.example_id,
    }


def schema_changes_table(rows: Sequence[Mapping[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA_CHANGES_SCHEMA)
