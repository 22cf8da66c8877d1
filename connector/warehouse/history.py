"""Record history in SQL: the `<resource>_history` view over `<resource>_versions`, a sweep's
deletion marks on the versions, and the seed that starts a resource's history from its current
table.

Why a view and not a table: `valid_to` is the next version's `updated_at`, which changes when a
version arrives; a view computes it when it is read (LEAD over the record's versions), so
loading a version never rewrites another. Its column list is the versions table's own, read from
the warehouse (PostgreSQL has no `SELECT * EXCLUDE`): when a load adds a column (an undocumented
field), `ensure_view` re-creates the view, DROP and CREATE in one transaction, so a reader never
finds it missing. The SQL is the same on DuckDB and PostgreSQL (the two destinations it is tested
on); docs/history.md gives it for other warehouses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connector.catalogue import ResourceSpec
from connector.records.history import history_view, parent_version_column, versions_table
from connector.records.normalize import DELETED_AT_COLUMN

if TYPE_CHECKING:
    from dlt.destinations.sql_client import SqlClientBase

VALID_FROM, VALID_TO, IS_CURRENT = "valid_from", "valid_to", "is_current"
_NEXT = "_ciklek_next_updated_at"  # inside the view only


def columns_of(client: SqlClientBase[object], table: str) -> list[str]:
    """A table's (or view's) columns in the warehouse, in order; [] when it does not exist."""
    rows = client.execute_sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        client.dataset_name,
        table,
    )
    return [str(row[0]) for row in rows or []]


def view_sql(client: SqlClientBase[object], spec: ResourceSpec, columns: Sequence[str]) -> str:
    """`CREATE VIEW <resource>_history`: the versions' columns, then `valid_from` (the version's
    `updated_at`), `valid_to` (the next version's `updated_at`; the version's deletion, when a
    sweep found the record deleted before a next version came; null while current) and
    `is_current`."""
    q = client.escape_column_name
    cols = ", ".join(q(c) for c in columns)
    at, deleted, nxt = q(spec.cursor_field), q(DELETED_AT_COLUMN), q(_NEXT)
    ends_deleted = f"{deleted} IS NOT NULL AND ({nxt} IS NULL OR {deleted} < {nxt})"
    return (
        f"CREATE VIEW {client.make_qualified_table_name(history_view(spec.name))} AS "
        f"SELECT {cols}, {at} AS {VALID_FROM}, "
        f"CASE WHEN {ends_deleted} THEN {deleted} ELSE {nxt} END AS {VALID_TO}, "
        f"({nxt} IS NULL AND {deleted} IS NULL) AS {IS_CURRENT} "
        f"FROM (SELECT {cols}, LEAD({at}) OVER (PARTITION BY {q(spec.primary_key)} "
        f"ORDER BY {at}) AS {nxt} "
        f"FROM {client.make_qualified_table_name(versions_table(spec.name))}) AS v"
    )


def ensure_view(client: SqlClientBase[object], spec: ResourceSpec) -> bool:
    """(Re-)create `<resource>_history` when its columns are not the versions table's plus the
    three of the view; True when it did. Nothing while the versions table does not exist."""
    columns = [c for c in columns_of(client, versions_table(spec.name)) if c != _NEXT]
    if not columns:
        return False
    view = history_view(spec.name)
    if columns_of(client, view) == [*columns, VALID_FROM, VALID_TO, IS_CURRENT]:
        return False
    with client.begin_transaction():
        client.execute_sql(f"DROP VIEW IF EXISTS {client.make_qualified_table_name(view)}")
        client.execute_sql(view_sql(client, spec, columns))
    return True


class _Pair:
    """A current table and its versions table, quoted, and the SQL that matches a version to
    the current row of the same record and `updated_at` (correlated on the versions table)."""

    def __init__(self, client: SqlClientBase[object], spec: ResourceSpec) -> None:
        q = client.escape_column_name
        self.current = client.make_qualified_table_name(spec.name)
        self.versions = client.make_qualified_table_name(versions_table(spec.name))
        self.deleted = q(DELETED_AT_COLUMN)
        ident, at = q(spec.primary_key), q(spec.cursor_field)
        self.same = f"c.{ident} = {self.versions}.{ident} AND c.{at} = {self.versions}.{at}"


def mark_versions(
    client: SqlClientBase[object],
    spec: ResourceSpec,
    *,
    unseen: str | None = None,
    params: Sequence[object] = (),
    at: dt.datetime | None = None,
) -> None:
    """A sweep's deletion marks on the versions: with `unseen` (a condition on the current
    table's rows, and `at`), mark the versions of the rows it selects, before they are removed
    (`deletes = "hard"`); without, copy each current row's mark to its version. Versions that
    carry a mark keep it; nothing while there is no versions table."""
    if not columns_of(client, versions_table(spec.name)):
        return
    p = _Pair(client, spec)
    if unseen is not None:
        client.execute_sql(
            f"UPDATE {p.versions} SET {p.deleted} = %s WHERE {p.deleted} IS NULL AND EXISTS "
            f"(SELECT 1 FROM {p.current} c WHERE {p.same} AND ({unseen}))",
            at,
            *params,
        )
        return
    client.execute_sql(
        f"UPDATE {p.versions} SET {p.deleted} = "
        f"(SELECT c.{p.deleted} FROM {p.current} c WHERE {p.same}) "
        f"WHERE {p.deleted} IS NULL AND EXISTS "
        f"(SELECT 1 FROM {p.current} c WHERE {p.same} AND c.{p.deleted} IS NOT NULL)"
    )


def seed(client: SqlClientBase[object], spec: ResourceSpec) -> int:
    """Start the history of `spec` from its current table: every current row (and an order's
    line items) becomes a version, unless that version is there already (so running it twice,
    after a kill, adds nothing). Both tables must exist, with the current table's columns.
    Returns the rows of the current table (the versions it holds now)."""
    q = client.escape_column_name
    current_cols = set(columns_of(client, spec.name))
    versions_cols = columns_of(client, versions_table(spec.name))
    if not current_cols or not versions_cols:
        return 0
    p = _Pair(client, spec)
    cols = [c for c in versions_cols if c in current_cols]
    listed = ", ".join(q(c) for c in cols)
    with client.begin_transaction():
        if spec.child is not None:
            _seed_items(client, spec)
        client.execute_sql(
            f"INSERT INTO {p.versions} ({listed}) SELECT {listed} FROM {p.current} c "
            f"WHERE NOT EXISTS (SELECT 1 FROM {p.versions} WHERE {p.same})"
        )
    rows = client.execute_sql(f"SELECT count(*) FROM {p.current}")
    return int(rows[0][0]) if rows else 0


def _seed_items(client: SqlClientBase[object], spec: ResourceSpec) -> None:
    """Each current line item, with its order's `updated_at`, as an item of that order version."""
    assert spec.child is not None
    q = client.escape_column_name
    child = spec.child
    item_cols = set(columns_of(client, child.table))
    target = columns_of(client, versions_table(child.table))
    link = parent_version_column(spec)
    if not item_cols or link not in target:
        return
    cols = [c for c in target if c in item_cols and c != link]
    items_v = client.make_qualified_table_name(versions_table(child.table))
    parent_key, ident, at = q(child.parent_key), q(spec.primary_key), q(spec.cursor_field)
    client.execute_sql(
        f"INSERT INTO {items_v} ({', '.join(q(c) for c in cols)}, {q(link)}) "
        f"SELECT {', '.join('li.' + q(c) for c in cols)}, o.{at} "
        f"FROM {client.make_qualified_table_name(child.table)} li "
        f"JOIN {client.make_qualified_table_name(spec.name)} o ON o.{ident} = li.{parent_key} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {items_v} v WHERE v.{parent_key} = li.{parent_key} "
        f"AND v.{q(link)} = o.{at} AND v.{q('id')} = li.{q('id')})"
    )
