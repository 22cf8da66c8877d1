"""Dagster: the Ciklek resources as software-defined assets, through dagster-dlt.

Install the extra (`pip install -e ".[dagster]"`), then
`dagster dev -f pipelines/dagster_definitions.py`.

The assets are `dlt_ciklek_orders`, `dlt_ciklek_customers` and `dlt_ciklek_products`
(`order_line_items` is loaded with orders). `ciklek_source()` called bare reads
`[sources.ciklek]` through dlt's providers, so the settings and the key come from the environment
(`SOURCES__CIKLEK__API_KEY`, ...) or `.dlt/` in the directory Dagster loads this file from; they
must be present when the code location loads, because the source is built then (its HTTP client
is opened only when a materialisation extracts, and closed when the extract ends).

Each materialisation traverses each resource to its end in one load and keeps its watermark in
dlt's pipeline state (stored in the warehouse), so the next one is incremental. The destination
is DuckDB (`ciklek_warehouse.duckdb` in the working directory, or dlt's
`DESTINATION__DUCKDB__CREDENTIALS`); for a warehouse, change `destination=` in `make_pipeline`
and give dlt its credentials the usual way. Unlike the `ciklek sync` command (and the cron
script), a run here is not chunked: an interrupted materialisation starts its traversal over.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at runtime.
from collections.abc import Iterator
from typing import Any

import dlt
from dagster import AssetExecutionContext, AssetsDefinition, Definitions
from dagster_dlt import DagsterDltResource, dlt_assets

from connector.destinations import resolve_destination
from connector.settings import default_state_dir
from connector.source import ciklek_source

PIPELINE_NAME = "ciklek_dagster"
DATASET = "ciklek"


def make_pipeline(duckdb_file: str | None = None) -> Any:
    """The dlt pipeline the assets load through (its own name: cron and Dagster never share)."""
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=resolve_destination("duckdb", DATASET, duckdb_file),
        dataset_name=DATASET,
        pipelines_dir=str(default_state_dir() / "pipelines"),
    )


def make_assets(pipeline: Any) -> AssetsDefinition:
    @dlt_assets(
        dlt_source=ciklek_source(),
        dlt_pipeline=pipeline,
        name="ciklek",
        group_name="ciklek",
    )
    def ciklek_assets(context: AssetExecutionContext, dlt: DagsterDltResource) -> Iterator[Any]:
        # A fresh source per run: fresh settings and client, and a schema that dagster-dlt's
        # metadata step has not touched (it pops keys from the pipeline schema's columns in
        # place, which breaks a second run of the same source object in one process).
        yield from dlt.run(context=context, dlt_source=ciklek_source())

    return ciklek_assets


def make_definitions(duckdb_file: str | None = None) -> Definitions:
    return Definitions(
        assets=[make_assets(make_pipeline(duckdb_file))],
        resources={"dlt": DagsterDltResource()},
    )


defs = make_definitions()
