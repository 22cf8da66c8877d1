"""Record history around a run's chunks: starting a resource's history from its current table
when `history` is switched on, and the `<resource>_history` views once the loads are in.

Why a seed: history switched on for a resource that has been syncing would otherwise begin with
the next change of each record; starting from the current rows, every record has a version from
the first run on (what changed before is gone: the API lists only the newest version). The seed
runs once per switch-on, recorded in dlt's state under `_ciklek_history` (a slot no data
resource owns, so a full refresh keeps it); it is SQL that adds only the versions not there yet,
so a run killed before the record is written seeds again and adds nothing.

The seed and the views need SQL of their own, tested on DuckDB and PostgreSQL; on other
warehouses the versions load all the same, and docs/history.md gives the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dlt
import pyarrow as pa
from dlt.common.libs.pyarrow import columns_to_arrow

from connector.catalogue import REJECTS_TABLE, ResourceSpec
from connector.config.settings import Settings
from connector.records.history import (
    VersionRows,
    parent_version_column,
    version_key,
    versions_table,
)
from connector.records.normalize import DELETED_AT_COLUMN, DELETED_COLUMN, TIMESTAMP_TYPE
from connector.runs.compose import SourceSetup
from connector.runs.source import ciklek_source
from connector.warehouse.history import columns_of, ensure_view, seed

HISTORY_STATE = "_ciklek_history"  # {"resources": [...]}: whose history is on, seeded
SQL_DESTINATIONS = frozenset({"duckdb", "postgres"})
_NOT_VERSIONED = frozenset({"_dlt_load_id", "_dlt_id"})  # lineage of the current tables only


def history_on(pipeline: dlt.Pipeline) -> list[str]:
    """The resources whose history the last recorded run kept (and seeded)."""
    sources = pipeline.state.get("sources") or {}
    resources = (sources.get("ciklek") or {}).get("resources") or {}
    recorded = (resources.get(HISTORY_STATE) or {}).get("resources")
    return [str(n) for n in recorded] if isinstance(recorded, list) else []


def start_history(pipeline: dlt.Pipeline, setup: SourceSetup, settings: Settings) -> None:
    """Before the chunks: seed the history of each resource of this run whose `history` was
    just switched on, and record which resources of the run keep history (with the run row)."""
    names = list(setup.resources)
    wanted = [n for n in names if n in settings.history]
    recorded = history_on(pipeline)
    if [n for n in wanted if n not in recorded]:
        pipeline.sync_destination()  # a fresh runner: the state the warehouse holds
        recorded = history_on(pipeline)
    new = [n for n in wanted if n not in recorded]
    if new and pipeline.destination.destination_name in SQL_DESTINATIONS:
        specs = [setup.catalogue[n] for n in new if n in _tables(pipeline)]
        if specs:  # (no current table yet: the history starts with the first load)
            _seed(pipeline, setup, specs)
    keep = sorted({*(n for n in recorded if n not in names), *wanted})
    if keep != sorted(recorded):
        setup.report.state_updates[HISTORY_STATE] = {"resources": keep}


def _tables(pipeline: dlt.Pipeline) -> Mapping[str, object]:
    """The tables of the pipeline's schema ({} before its first load)."""
    if pipeline.default_schema_name is None:
        return {}
    return pipeline.default_schema.tables


def _seed(pipeline: dlt.Pipeline, setup: SourceSetup, specs: Sequence[ResourceSpec]) -> None:
    """The versions tables get every column of the current tables (one load of empty tables,
    which dlt creates or widens), then SQL copies the current rows in."""
    caps = pipeline.destination.capabilities()
    with pipeline.sql_client() as client:
        missing = [
            part
            for spec in specs
            for part in _empty_versions(_tables(pipeline), spec, caps)
            if not set(part.rows.column_names) <= set(columns_of(client, part.table))
        ]
    if missing:
        setup.report.pending_versions.extend(missing)
        pipeline.run(ciklek_source(resources=[], setup=setup).with_resources(REJECTS_TABLE))
    with pipeline.sql_client() as client:
        for spec in specs:
            rows = seed(client, spec)
            out = setup.report.outcome(spec.name)
            out.notes.append(f"history started from the {rows:,} current row(s)")


def _empty_versions(
    tables: Mapping[str, object], spec: ResourceSpec, caps: object
) -> list[VersionRows]:
    """Zero-row tables with the columns a resource's versions tables need: the current table's
    (its lineage left out; an order's line items without the tombstone and deletion columns,
    with their order's `updated_at`)."""
    out = []
    for table in spec.tables:
        found = tables.get(table)
        columns = found.get("columns", {}) if isinstance(found, dict) else {}
        keep = {k: v for k, v in columns.items() if k not in _NOT_VERSIONED}
        if table != spec.name:
            keep = {k: v for k, v in keep.items() if k not in (DELETED_COLUMN, DELETED_AT_COLUMN)}
        if not keep:
            continue
        schema = columns_to_arrow(keep, caps, "UTC")  # type: ignore[arg-type]
        if table != spec.name:
            schema = schema.append(pa.field(parent_version_column(spec), TIMESTAMP_TYPE))
        rows = pa.Table.from_batches([], schema=schema)
        out.append(VersionRows(versions_table(table), version_key(spec, table), rows))
    return out


def finish_history(pipeline: dlt.Pipeline, settings: Settings, names: Sequence[str]) -> None:
    """After the loads: (re-)create the `<resource>_history` view of each resource that keeps
    history and whose versions table changed its columns (or has no view yet)."""
    if pipeline.destination.destination_name not in SQL_DESTINATIONS:
        return
    kept = [n for n in names if n in settings.history]
    if not kept:
        return
    with pipeline.sql_client() as client:
        for name in kept:
            ensure_view(client, settings.catalogue[name])
