"""What the warehouse says, read through dlt's SQL client: no request to Ciklek.

Why here: a check launched on its own ("Execute" on a check in the UI) must be answered from
what is already there (the tables, `_ciklek_rejects`, the run log `_ciklek_sync_runs`), and a
materialisation reports the table as it is after the run (`dagster/row_count`) and its columns
as the warehouse has them (`dagster/column_schema`: dlt's schema, typed by the destination's
own type mapper, described by docs/tables.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dlt
from dagster import TableColumn, TableColumnConstraints, TableSchema
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from ciklek_dagster.config import Target
from ciklek_dagster.docs_tables import TablesDoc
from ciklek_dagster.tables import plain
from connector.catalogue import REJECTS_TABLE, RUNS_TABLE, SCHEMA_CHANGES_TABLE
from connector.errors import DestinationBusy
from connector.runs.compose import dlt_run_settings
from connector.runs.target import duckdb_path
from connector.warehouse.destinations import resolve_destination

RUNS_READ = 200  # the latest runs read back: enough to find each table's last sync
DELETED = "_ciklek_deleted_at"


@dataclass(frozen=True)
class TableStats:
    """A table as it is: rows, distinct ids, rows marked deleted upstream (None: no column)."""

    rows: int
    distinct_ids: int
    deleted: int | None


@dataclass(frozen=True)
class RunRow:
    """One row of `_ciklek_sync_runs`: what a check-only run reads of the last run."""

    run_id: str
    kind: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    outcome: str
    resources: tuple[str, ...]
    message: str

    def covers(self, resource: str) -> bool:
        return resource in self.resources


class Warehouse:
    """The target's dataset, read-only. A DuckDB file another process holds is reported
    (DestinationBusy: retry later), never waited for; a file not there yet is an empty
    warehouse (opening it would create one)."""

    def __init__(self, target: Target, state_dir: Path) -> None:
        self.target = target
        self.state_dir = state_dir
        self._pipeline: dlt.Pipeline | None = None

    def exists(self) -> bool:
        if self.target.destination_name != "duckdb":
            return True
        path = duckdb_path(self.target.duckdb_file)
        return path is None or path.exists()

    def pipeline(self) -> dlt.Pipeline:
        """The run's own dlt pipeline (same name, directory and destination as `run_sync`)."""
        if self._pipeline is None:
            t = self.target
            self._pipeline = dlt.pipeline(
                pipeline_name=t.pipeline,
                destination=resolve_destination(t.destination, t.dataset, t.duckdb_file),
                dataset_name=t.dataset,
                pipelines_dir=str(self.state_dir / "pipelines"),
            )
        return self._pipeline

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        with dlt_run_settings(), self.pipeline().sql_client() as client:
            try:
                yield client
            except DatabaseUndefinedRelation:
                raise
            except Exception as exc:
                if "lock" in str(exc).lower():
                    raise DestinationBusy(
                        f"the warehouse ({self.target.destination_name}) is locked by another "
                        "process (a sync running?); the checks are evaluated when it is free"
                    ) from None
                raise

    def stats(self, tables: Iterable[str]) -> dict[str, TableStats]:
        """Each table's counts; a table not created yet is left out."""
        found: dict[str, TableStats] = {}
        if not self.exists():
            return found
        with self.client() as client:
            for table in tables:
                stats = _table_stats(client, client.make_qualified_table_name(table))
                if stats is not None:
                    found[table] = stats
        return found

    def runs(self) -> list[RunRow]:
        """The pipeline's latest runs, newest first ([] before the first run)."""
        if not self.exists():
            return []
        with self.client() as client:
            name = client.make_qualified_table_name(RUNS_TABLE)
            columns = "run_id, kind, started_at, ended_at, outcome, resources, message"
            try:
                rows = client.execute_sql(
                    f"SELECT {columns} FROM {name} WHERE pipeline = %s "
                    f"ORDER BY started_at DESC LIMIT {RUNS_READ}",
                    self.target.pipeline,
                )
            except DatabaseUndefinedRelation:
                return []
        return [_run_row(row) for row in rows or []]

    def rejects(self, resource: str, run: RunRow) -> int:
        """Records of `resource` rejected during `run` (`_ciklek_rejects.seen_at` in its span)."""
        ended = run.ended_at or dt.datetime.now(dt.UTC)
        with self.client() as client:
            name = client.make_qualified_table_name(REJECTS_TABLE)
            try:
                rows = client.execute_sql(
                    f"SELECT count(*) FROM {name} WHERE resource = %s AND seen_at >= %s "
                    "AND seen_at <= %s",
                    resource,
                    run.started_at,
                    ended,
                )
            except DatabaseUndefinedRelation:
                return 0
        return int(rows[0][0]) if rows else 0

    def schema_changes(self, table: str, run: RunRow) -> list[dict[str, object]]:
        """Schema changes of `table` recorded by `run` (`_ciklek_schema_changes.run_id`)."""
        with self.client() as client:
            name = client.make_qualified_table_name(SCHEMA_CHANGES_TABLE)
            column = client.escape_column_name("column")
            try:
                rows = client.execute_sql(
                    f"SELECT table_name, {column}, change, example_record_id FROM {name} "
                    "WHERE run_id = %s AND table_name = %s ORDER BY detected_at",
                    run.run_id,
                    table,
                )
            except DatabaseUndefinedRelation:
                return []
        keys = ("table_name", "column", "change", "example_record_id")
        return [dict(zip(keys, row, strict=True)) for row in rows or []]

    def column_schema(self, table: str, docs: TablesDoc) -> TableSchema | None:
        """The table's columns in dlt's schema, typed as the destination has them, described by
        docs/tables.md; None before the pipeline has a schema."""
        try:
            schema = self.pipeline().default_schema
        except Exception:  # no schema yet (nothing loaded from this machine)
            return None
        if table not in schema.tables:
            return None
        mapper = self.pipeline().destination.capabilities().get_type_mapper()
        columns = []
        for column in schema.get_table_columns(table).values():
            name = str(column.get("name"))
            try:
                prepared = cast(Any, schema.get_table(table))  # dlt's own tables are prepared
                kind = str(mapper.to_destination_type(column, prepared))
            except Exception:  # a destination without SQL types (filesystem): dlt's own
                kind = str(column.get("data_type", "text"))
            doc = docs.column(table, name)
            columns.append(
                TableColumn(
                    name=name,
                    type=kind,
                    description=plain(doc.meaning) if doc and doc.meaning else None,
                    constraints=TableColumnConstraints(
                        nullable=bool(column.get("nullable", True)),
                        unique=bool(column.get("primary_key", False)),
                    ),
                )
            )
        return TableSchema(columns=columns)


def _table_stats(client: Any, name: str) -> TableStats | None:
    """Rows, distinct ids and rows marked deleted in one query; None when there is no table."""
    try:
        with client.execute_query(f"SELECT * FROM {name} LIMIT 0") as cursor:
            columns = {str(d[0]) for d in cursor.description or []}
    except DatabaseUndefinedRelation:
        return None
    deleted = DELETED in columns
    marked = f", count(CASE WHEN {DELETED} IS NOT NULL THEN 1 END)" if deleted else ""
    row = client.execute_sql(f"SELECT count(*), count(DISTINCT id){marked} FROM {name}")[0]
    return TableStats(int(row[0]), int(row[1]), int(row[2]) if deleted else None)


def _utc(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None


def _run_row(row: Sequence[object]) -> RunRow:
    started = _utc(row[2]) or dt.datetime.min.replace(tzinfo=dt.UTC)
    return RunRow(
        run_id=str(row[0] or ""),
        kind=str(row[1] or "sync"),
        started_at=started,
        ended_at=_utc(row[3]),
        outcome=str(row[4] or ""),
        resources=tuple(p for p in str(row[5] or "").split(",") if p),
        message=str(row[6] or ""),
    )
