"""A reload (`--full-refresh`) that never empties a table: it is built in shadow tables beside the
live ones and swapped in, in one transaction, when its traversal completes.

Why shadow tables: a reload of a large account needs days of quota, and dropping the live table
first leaves dashboards on a partial table all that time. Until the swap every query sees the
old, complete table; syncs of the other resources go on; a kill, a quota stop or a new day only
pause the reload (its traversal is checkpointed like any other).

Why the swap copies rows instead of renaming tables: on PostgreSQL a view (a dbt model, say) is
bound to the table it was created on; after a rename it would follow the old table, and dropping
that would fail or take the view with it. So, in one transaction per swap: the live table gains
the columns the reload has and lacks, its rows are deleted, a column whose type the reload
changed takes the new type (a money field migrated from text, the reason most reloads happen),
the reload's rows are inserted, and the shadow table is dropped. A kill at any instant leaves the
old table or the new one, whole. DuckDB and PostgreSQL have transactional DDL; where a
destination offers no such swap the reload keeps the old behaviour behind `--drop-first`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from connector.timefmt import iso

if TYPE_CHECKING:
    from dlt.destinations.sql_client import SqlClientBase

SHADOW_PREFIX = "_ciklek_reload_"
# Destinations whose DDL is transactional, so a swap is all or nothing (tested for real).
SWAPPABLE = frozenset({"duckdb", "postgres"})


def shadow_name(table: str) -> str:
    """Where a reload of `table` is built (a table of ours, beside the live one)."""
    return SHADOW_PREFIX + table


def can_swap(destination: str) -> bool:
    return destination in SWAPPABLE


def swap_record(tables: Sequence[str]) -> dict[str, object]:
    """What the resource state keeps of a completed reload until its swap is recorded."""
    return {"tables": list(tables), "completed_at": iso(dt.datetime.now(dt.UTC))}


def _columns(client: SqlClientBase[object], table: str, destination: str) -> dict[str, str]:
    """Column name -> its SQL type as the destination writes it (for ALTER TABLE), in order."""
    if destination == "postgres":  # information_schema drops numeric's precision and scale
        rows = client.execute_sql(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON a.attrelid = c.oid JOIN pg_namespace n ON c.relnamespace = n.oid "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            client.dataset_name,
            table,
        )
    else:
        rows = client.execute_sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            client.dataset_name,
            table,
        )
    return {str(name): str(kind) for name, kind in rows or []}


def shadows_present(
    client: SqlClientBase[object], tables: Sequence[str], destination: str
) -> list[str]:
    """The live tables whose shadow exists (a reload built, not yet swapped in)."""
    return [t for t in tables if _columns(client, shadow_name(t), destination)]


def drop_shadows(client: SqlClientBase[object], tables: Sequence[str]) -> None:
    """A new reload begins: what an abandoned one left beside `tables` goes."""
    for table in tables:
        client.execute_sql(
            f"DROP TABLE IF EXISTS {client.make_qualified_table_name(shadow_name(table))}"
        )


def swap_in(
    client: SqlClientBase[object], tables: Sequence[str], destination: str
) -> dict[str, list[str]]:
    """Swap the shadows of `tables` in, all in one transaction; returns the columns each live
    table gained or changed. A table whose shadow is gone was swapped in already (a run killed
    after the commit): nothing to do for it."""
    changed: dict[str, list[str]] = {}
    with client.begin_transaction():
        for table in tables:
            shadow = _columns(client, shadow_name(table), destination)
            if not shadow:
                continue
            live = _columns(client, table, destination)
            changed[table] = _swap_one(client, table, live, shadow)
    return changed


def _swap_one(
    client: SqlClientBase[object], table: str, live: Mapping[str, str], shadow: Mapping[str, str]
) -> list[str]:
    live_name = client.make_qualified_table_name(table)
    shadow_table = client.make_qualified_table_name(shadow_name(table))
    if not live:  # nothing to keep (the first sync of this table was the reload)
        client.execute_sql(
            f"ALTER TABLE {shadow_table} RENAME TO {client.escape_column_name(table)}"
        )
        return list(shadow)
    added = [c for c in shadow if c not in live]
    retyped = [c for c in shadow if c in live and live[c].lower() != shadow[c].lower()]
    for column in added:
        name = client.escape_column_name(column)
        client.execute_sql(f"ALTER TABLE {live_name} ADD COLUMN {name} {shadow[column]}")
    client.execute_sql(f"DELETE FROM {live_name}")
    for column in retyped:
        client.execute_sql(
            f"ALTER TABLE {live_name} ALTER COLUMN {client.escape_column_name(column)} "
            f"TYPE {shadow[column]} USING NULL"
        )
    names = ", ".join(client.escape_column_name(c) for c in shadow)
    client.execute_sql(f"INSERT INTO {live_name} ({names}) SELECT {names} FROM {shadow_table}")
    client.execute_sql(f"DROP TABLE {shadow_table}")
    return added + retyped
