"""Every version a walk fetched, as rows of `<resource>_versions` (and, for orders, of
`order_line_items_versions`): pure Arrow, no I/O.

Why from the batches the current tables are built from: the newest version of each record is
normalised once, for both tables; only the versions a chunk superseded (a record updated while
the traversal ran, met twice) are normalised on their own. A version is keyed by the record's
id and its `updated_at` (a line item by its order's id, its order's `updated_at` and its own
id), so a version fetched again (a retry, a range, a kill, a sweep) is the same row, never a
second one: `distinct` keeps the first of each key within a load, and the destination's merge on
that key does so across loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import pyarrow as pa

from connector.catalogue import ResourceSpec
from connector.records.normalize import DELETED_COLUMN, Batch, with_deleted_at

VERSIONS_SUFFIX = "_versions"
VIEW_SUFFIX = "_history"


def versions_table(table: str) -> str:
    """`orders` -> `orders_versions`; `order_line_items` -> `order_line_items_versions`."""
    return table + VERSIONS_SUFFIX


def history_view(resource: str) -> str:
    return resource + VIEW_SUFFIX


def parent_version_column(spec: ResourceSpec) -> str:
    """The line items' link to their order's version: `order_updated_at` (the parent key
    `order_id` with the cursor field in place of `id`)."""
    assert spec.child is not None
    return f"{spec.child.parent_key.removesuffix('_id')}_{spec.cursor_field}"


def version_key(spec: ResourceSpec, table: str) -> tuple[str, ...]:
    """What one version of a row of `table` (a table of `spec`) is keyed by."""
    if spec.child is not None and table == spec.child.table:
        return (spec.child.parent_key, parent_version_column(spec), "id")
    return (spec.primary_key, spec.cursor_field)


@dataclass(frozen=True)
class VersionRows:
    """Rows for one versions table, and the columns a version is keyed by."""

    table: str
    key: tuple[str, ...]
    rows: pa.Table


def version_rows(spec: ResourceSpec, batches: Iterable[Batch]) -> list[VersionRows]:
    """The rows of `batches` as versions: each parent row with `_ciklek_deleted_at` (null: a
    sweep sets it on a version it found deleted), each line item with its order's `updated_at`;
    an order without items has none (the current table's tombstones are left out)."""
    out: list[VersionRows] = []
    for batch in batches:
        if batch.parent is None or not batch.parent.num_rows:
            continue
        key = version_key(spec, spec.name)
        out.append(VersionRows(versions_table(spec.name), key, with_deleted_at(batch.parent)))
        if spec.child is not None and batch.child is not None:
            items = _item_versions(spec, batch)
            child_key = version_key(spec, spec.child.table)
            out.append(VersionRows(versions_table(spec.child.table), child_key, items))
    return out


def _item_versions(spec: ResourceSpec, batch: Batch) -> pa.Table:
    """The batch's line items (tombstones cut off: they follow the items), each with the
    `updated_at` of the order row it came from."""
    assert batch.parent is not None and batch.child is not None
    counts = batch.child_counts
    items = batch.child.slice(0, sum(counts)).drop_columns([DELETED_COLUMN])
    rows = pa.array(list(chain.from_iterable(map(repeat, range(len(counts)), counts))), pa.int64())
    stamps = batch.parent.column(spec.cursor_field).take(rows)
    return items.append_column(parent_version_column(spec), stamps)


def distinct(parts: Sequence[VersionRows]) -> list[VersionRows]:
    """One table per versions table, each key once (the first met): a load may carry versions
    of several chunks (those a full refresh's first load held back) or one version twice (a
    server replaying a page), and a merge needs each key once."""
    by_table: dict[str, list[VersionRows]] = {}
    for part in parts:
        by_table.setdefault(part.table, []).append(part)
    out = []
    for table, group in by_table.items():
        rows = pa.concat_tables([g.rows for g in group], promote_options="default")
        out.append(VersionRows(table, group[0].key, _first_of_each(rows, group[0].key)))
    return out


def _first_of_each(rows: pa.Table, key: tuple[str, ...]) -> pa.Table:
    if rows.num_rows < 2:
        return rows
    index = "__ciklek_row"
    numbered = rows.select(list(key)).append_column(index, pa.array(range(rows.num_rows)))
    firsts = numbered.group_by(list(key), use_threads=False).aggregate([(index, "min")])
    if firsts.num_rows == rows.num_rows:
        return rows
    return rows.take(pa.array(sorted(firsts.column(f"{index}_min").to_pylist()), pa.int64()))
