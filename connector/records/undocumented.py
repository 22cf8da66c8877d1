"""Undocumented fields: the names, nesting and number of columns a warehouse can take.

The API may add fields at any time and the contract says they never break a sync. Left alone,
one record could: dlt normalises column names (snake_case) when it loads an Arrow table and
refuses a table where two names normalise alike (`NameNormalizationCollision`); a value nested
1,000 deep overflows Python's recursion when it is turned into text; PostgreSQL refuses a table
of more than 1,600 columns (`TooManyColumns`). Each case is decided here, per record, before the
Arrow table is built, and the rest of the page loads:

- names are normalised with dlt's snake_case convention, as the pipeline's schema does, so the
  Arrow column is already the warehouse column;
- two fields of one record landing in one column (`Total` beside the documented `total`, `Notes`
  beside `notes`): the **record is rejected**, because nothing says which value is right; the
  warehouse keeps its previous version and `raw_json` keeps both values for a human to decide;
- a value nested deeper than `MAX_NESTING` levels: the **record is rejected** (no sane producer
  sends it, and no warehouse JSON reader should have to take it); its `raw_json` is cut at
  `RAW_JSON_DEPTH` levels so the reject itself can be written;
- a name reserved for dlt or for us (`_dlt_*`, `_ciklek_*`): the **field is dropped** and the
  record loads. Those columns are lineage (`_dlt_id`, `_dlt_load_id`) or our own markers
  (`_ciklek_deleted`), and a value from the server would forge them; the record's data is fine;
- beyond `MAX_EXTRA_COLUMNS` undocumented columns per table, further fields fold into one JSON
  text column, `_ciklek_extra` (`{"field": value, ...}`, null when a row has none), and so do
  fields whose name has no column form at all (empty or blank).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from dlt.common.normalizers.naming.snake_case import NamingConvention

MAX_NESTING = 32  # levels of lists/objects in one field's value
RAW_JSON_DEPTH = 64  # levels kept in _ciklek_rejects.raw_json (a record holds fields, items...)
MAX_EXTRA_COLUMNS = 200  # undocumented columns per table; PostgreSQL stops at 1,600 in all
EXTRA_COLUMN = "_ciklek_extra"
RESERVED_PREFIXES = ("_dlt_", "_ciklek_")
CUT = "[cut: nested too deep]"

_NAMING = NamingConvention()


# Names dlt's snake_case leaves as they are; checked first, as dlt's four regex passes cost
# ~10 µs a name and a hostile page can bring a hundred thousand distinct ones.
_PLAIN = re.compile(r"_?[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


@lru_cache(maxsize=65_536)  # bounded: a hostile server can send any number of names
def column_name(field: str) -> str:
    """The column dlt makes of a field name (its snake_case convention), or "" when none."""
    if _PLAIN.fullmatch(field):
        return field
    try:
        return _NAMING.normalize_path(field)
    except ValueError:  # an empty or blank name
        return ""


def is_reserved(column: str) -> bool:
    return column.startswith(RESERVED_PREFIXES)


def too_deep(value: object, limit: int = MAX_NESTING) -> bool:
    """More than `limit` levels of lists/objects, found level by level (never by recursion)."""
    level: list[object] = [value]
    for _ in range(limit + 1):
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            return False
        level = []
        for item in containers:
            level.extend(item.values() if isinstance(item, dict) else item)
    return True


def _cut(value: object, depth: int) -> object:
    if isinstance(value, dict):
        if depth >= RAW_JSON_DEPTH:
            return CUT
        return {str(k): _cut(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= RAW_JSON_DEPTH:
            return CUT
        return [_cut(v, depth + 1) for v in value]
    return value


def bounded_json(value: object, *, sort_keys: bool = False) -> str:
    """JSON text of anything parsed from JSON, deeper levels replaced by a marker: never raises
    RecursionError, so a poison record can always be written to `_ciklek_rejects` (or hashed).
    Below RAW_JSON_DEPTH the text is exactly `json.dumps(value, default=str)`."""
    if too_deep(value, RAW_JSON_DEPTH):
        value = _cut(value, 0)
    return json.dumps(value, default=str, sort_keys=sort_keys)


def key_text(value: object) -> str:
    """`str(value)` for an id or a cursor value, unless it is nested too deep to recurse through
    (then its bounded JSON): the traversal must never crash on a poison record's id."""
    if isinstance(value, (dict, list)) and too_deep(value, RAW_JSON_DEPTH):
        return bounded_json(value)
    return str(value)


CHANGES = ("new_column", "folded_into_extra", "type_changed", "documented_field_missing")


@dataclass(frozen=True)
class SchemaChange:
    """One change in what the API sends, as `_ciklek_schema_changes` records it.

    `new_column`: an undocumented field got a column of its own; `folded_into_extra`: one went
    into `_ciklek_extra` (past the column cap, or `schema_changes = "freeze"`); `type_changed`: a
    documented field whose values, all of them in a batch, no longer fit its type;
    `documented_field_missing`: a whole page without a documented field.
    """

    table: str
    column: str
    change: str
    example_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.table}|{self.column}|{self.change}"


class TableColumns:
    """Which undocumented columns each table already has, so the cap holds across batches, and
    the schema changes seen on the way.

    One object per run: the caller seeds it from the pipeline's schema (`seed`) and passes it to
    every `build_batch`; a column admitted once keeps its place, and only new names count
    against `cap`. Without one, `build_batch` starts afresh and the cap holds per batch.
    `frozen` (`schema_changes = "freeze"`): no column is ever added; every new field folds into
    `_ciklek_extra`. Changes are kept once each (`changes()`), for the run to record.
    """

    def __init__(self, cap: int = MAX_EXTRA_COLUMNS, *, frozen: bool = False) -> None:
        self.cap = cap
        self.frozen = frozen
        self._known: dict[str, set[str]] = {}
        self._existing: set[str] = set()  # tables the warehouse had before this run loaded them
        self._lock = threading.Lock()
        self._changes: dict[str, SchemaChange] = {}

    def note(self, change: SchemaChange) -> None:
        """Remember a change (the first example of each is kept)."""
        with self._lock:
            self._changes.setdefault(change.key, change)

    def changes(self) -> list[SchemaChange]:
        """Every change noted so far in this run, in the order first seen."""
        with self._lock:
            return list(self._changes.values())

    def columns_of(self, table: str) -> set[str]:
        return set(self._known.get(table, ()))

    def existed(self, table: str) -> bool:
        """Did the warehouse have the table before? Its first load is its starting point: the
        columns that load creates are no change."""
        return table in self._existing

    def seed(self, table: str, columns: Iterable[str]) -> None:
        """Columns the table already has in the warehouse (documented ones are not counted)."""
        columns = list(columns)
        if columns:
            self._existing.add(table)
        known = self._known.setdefault(table, set())
        known.update(c for c in map(column_name, columns) if c and not is_reserved(c))

    def admit(self, table: str, wanted: Iterable[str], documented: frozenset[str]) -> set[str]:
        """The columns among `wanted` (in first-seen order) that may be columns of their own."""
        known = self._known.setdefault(table, set())
        room = 0 if self.frozen else self.cap - len(known - documented)
        admitted: set[str] = set()
        for column in wanted:
            if column in known or column in documented:
                admitted.add(column)
            elif room > 0:
                known.add(column)
                admitted.add(column)
                room -= 1
        return admitted
