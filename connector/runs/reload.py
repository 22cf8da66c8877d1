"""Reloads (`--full-refresh`) in a run: a new one starts clean, a completed one is swapped in.

The SQL is `connector/warehouse/reload.py`; here it is tied to the run: which resources start a
reload (their committed traversal is not one), which completed one (`ResourceState.swap`,
committed with the reload's last rows), and dlt's schema, which must learn that the live table
now has the reload's columns and that the shadow table is gone (dlt compares its stored schema
with the destination on the next load, and creates only what it believes is missing).

Kill-safe at every step: the swap is one transaction; the schema change and the cleared
`swap` mark are made again by the next run when a kill came between them (the swap of a table
whose shadow is gone is a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dlt

from connector.catalogue import ResourceSpec
from connector.errors import DestinationNeedsPerson
from connector.traversal.run_report import RunReport
from connector.traversal.state import states_in
from connector.warehouse.faults import classify, first_line
from connector.warehouse.reload import drop_shadows, shadow_name, swap_in


def start_reloads(
    pipeline: dlt.Pipeline, names: Sequence[str], catalogue: Mapping[str, ResourceSpec]
) -> None:
    """Before a new reload's first chunk: what an abandoned reload left beside the live tables
    (rows of a chunk that never committed) goes, from the warehouse and from dlt's schema."""
    tables = [t for name in names for t in catalogue[name].tables]
    if not tables:
        return
    with pipeline.sql_client() as client:
        drop_shadows(client, tables)
        with client.with_staging_dataset():  # dlt's merge staging copies of the shadows
            drop_shadows(client, tables)
    _forget_shadows(pipeline, tables)


def swap_completed(pipeline: dlt.Pipeline, names: Sequence[str], report: RunReport) -> list[str]:
    """Swap in every reload of `names` whose traversal completed; returns the tables swapped.
    The cleared mark goes out with the run row (a load of its own)."""
    swapped: list[str] = []
    destination = pipeline.destination.destination_name
    for name, state in states_in(pipeline.state, names).items():
        record = state.swap
        if record is None or "swap" in report.state_updates.get(name, {}):
            continue
        raw = record.get("tables")
        tables = [str(t) for t in raw] if isinstance(raw, list) else []
        try:
            with pipeline.sql_client() as client:
                swap_in(client, tables, destination)
                with client.with_staging_dataset():  # the shadows' merge staging copies
                    drop_shadows(client, tables)
        except Exception as exc:
            if classify(exc) is not None:
                raise  # the warehouse unreachable, locked, full: classified as any load failure
            raise DestinationNeedsPerson(
                f"the reload of {', '.join(tables)} is complete but the warehouse refused its "
                f"swap ({first_line(exc)}); nothing changed. Fix it in the warehouse (e.g. a view "
                "depends on a column whose type the reload changes: drop it), then run again: "
                "the swap is retried, nothing is fetched again"
            ) from exc
        _forget_shadows(pipeline, tables)
        report.state_updates.setdefault(name, {})["swap"] = None
        report.outcome(name).notes.append(
            f"reload swapped in: {', '.join(tables)} (one transaction)"
        )
        swapped += tables
    return swapped


def _forget_shadows(pipeline: dlt.Pipeline, tables: Sequence[str]) -> None:
    """dlt's schema after a swap (or an abandoned reload): the live table has the shadow's
    columns (types included: a reload may migrate a money field from text), the shadow none."""
    if pipeline.default_schema_name is None:
        return
    schema = pipeline.default_schema
    shadows = [shadow_name(t) for t in tables if shadow_name(t) in schema.tables]
    for table in tables:
        shadow = schema.tables.get(shadow_name(table))
        if shadow is None:
            continue
        live = schema.tables.get(table)
        if live is None:  # the first load of the table was the reload: its shadow became it
            schema.tables[table] = {**shadow, "name": table}
            continue
        for column_name, column in shadow.get("columns", {}).items():
            live.setdefault("columns", {})[column_name] = dict(column)
    if shadows:
        schema.drop_tables(shadows)
        pipeline.schemas.save_schema(schema)
