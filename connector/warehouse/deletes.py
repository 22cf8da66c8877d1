"""A completed sweep against the warehouse, in SQL: how many live rows it did not see (the
verdict its guard judges), and the marks (or, with `deletes = "hard"`, the removals).

Why "not seen" is `_dlt_load_id < threshold`: the threshold is the load id of the sweep's first
chunk, dlt's load ids are increasing timestamps, and every row the sweep (or a sync since) loaded
carries a later one. dlt's load ids are `str(unix time)` ("1764438000.123456"): until the year
2286 the integer part has ten digits, so comparing them as text (which every SQL dialect does
alike) is comparing the instants. Rows loaded before load ids were written have none: not seen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connector.catalogue import ResourceSpec
from connector.records.normalize import DELETED_AT_COLUMN
from connector.warehouse.history import mark_versions

if TYPE_CHECKING:
    from dlt.destinations.sql_client import SqlClientBase

LOAD_ID = "_dlt_load_id"


@dataclass(frozen=True)
class Seen:
    """What a sweep saw: rows loaded since `threshold`, and the ids it fetched but quarantined
    (no row was written for them)."""

    threshold: str
    quarantined: Sequence[str] = ()


@dataclass(frozen=True)
class Verdict:
    """What marking a completed sweep would do to one resource's table."""

    live: int  # rows not marked deleted
    unseen: int  # of those, rows the sweep did not see: what it would mark
    seen: int  # distinct records seen (rows loaded since the threshold, plus quarantined)
    expected: int | None  # meta.total of the traversal's last page

    def refusal(self, max_share: float) -> str | None:
        """Why marking would be unsafe, or None."""
        if self.expected is not None and self.seen < self.expected:
            return (
                f"the sweep saw {self.seen:,} distinct records but the list announced "
                f"{self.expected:,} (meta.total): the list left records out"
            )
        if self.unseen > max_share * self.live:
            share = self.unseen / self.live if self.live else 1.0
            return (
                f"{share:.0%} of its {self.live:,} live rows, more than sweep_max_delete_share "
                f"{max_share:.0%}"
            )
        return None


class _Sql:
    """Names and the "not seen" condition of one table, quoted for the destination."""

    def __init__(self, client: SqlClientBase[object], table: str, seen: Seen):
        self.table = client.make_qualified_table_name(table)
        self.deleted = client.escape_column_name(DELETED_AT_COLUMN)
        self.load = client.escape_column_name(LOAD_ID)
        self.id = client.escape_column_name("id")
        ids = list(seen.quarantined)
        self.params: list[object] = [seen.threshold, *ids]
        keep = f" AND CAST({self.id} AS VARCHAR) NOT IN ({', '.join(['%s'] * len(ids))})"
        self.unseen = f"({self.load} IS NULL OR {self.load} < %s)" + (keep if ids else "")


def _scalar(client: SqlClientBase[object], sql: str, *params: object) -> int:
    rows = client.execute_sql(sql, *params)
    return int(rows[0][0]) if rows else 0


def _has_table(client: SqlClientBase[object], table: str) -> bool:
    """Does the table exist, with the marker column? (A resource with no rows has no table.)"""
    rows = client.execute_sql(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        client.dataset_name,
        table,
        DELETED_AT_COLUMN,
    )
    return bool(rows and rows[0][0])


def verdict(
    client: SqlClientBase[object],
    spec: ResourceSpec,
    seen: Seen,
    *,
    unkeyed: int,
    expected: int | None,
) -> Verdict:
    """Count the resource's live rows and those the sweep did not see. `unkeyed`: records it
    fetched without an id (seen, no row); `expected`: the list's last `meta.total`."""
    extra = len(seen.quarantined) + unkeyed
    if not _has_table(client, spec.name):
        return Verdict(0, 0, extra, expected)
    q = _Sql(client, spec.name, seen)
    live_rows = f"SELECT count(*) FROM {q.table} WHERE {q.deleted} IS NULL"
    return Verdict(
        live=_scalar(client, live_rows),
        unseen=_scalar(client, f"{live_rows} AND {q.unseen}", *q.params),
        seen=_scalar(client, f"SELECT count(*) FROM {q.table} WHERE {q.load} >= %s", q.params[0])
        + extra,
        expected=expected,
    )


def mark(
    client: SqlClientBase[object], spec: ResourceSpec, seen: Seen, *, at: dt.datetime, hard: bool
) -> None:
    """Mark (or remove) the rows not seen, and the line items of the orders among them, in one
    transaction; with `history`, the versions they were end at `at` (`warehouse/history.py`)."""
    if not _has_table(client, spec.name):
        return
    q = _Sql(client, spec.name, seen)
    child = spec.child
    items = client.make_qualified_table_name(child.table) if child else None
    has_items = child is not None and _has_table(client, child.table)
    with client.begin_transaction():
        if hard:  # the history keeps the deletion: the versions are marked before the rows go
            mark_versions(client, spec, unseen=q.unseen, params=q.params, at=at)
            if has_items and child is not None:
                link = client.escape_column_name(child.parent_key)
                client.execute_sql(
                    f"DELETE FROM {items} WHERE {link} IN "
                    f"(SELECT {q.id} FROM {q.table} WHERE {q.unseen})",
                    *q.params,
                )
            client.execute_sql(f"DELETE FROM {q.table} WHERE {q.unseen}", *q.params)
            return
        client.execute_sql(
            f"UPDATE {q.table} SET {q.deleted} = %s WHERE {q.deleted} IS NULL AND {q.unseen}",
            at,
            *q.params,
        )
        if has_items and child is not None:
            link = client.escape_column_name(child.parent_key)
            client.execute_sql(
                f"UPDATE {items} SET {q.deleted} = %s WHERE {q.deleted} IS NULL AND {link} IN "
                f"(SELECT {q.id} FROM {q.table} WHERE {q.deleted} IS NOT NULL)",
                at,
            )
        mark_versions(client, spec)  # each marked row's version ends there (the history view)
