"""The dlt source: one resource per catalogue entry, incremental, chunked, resumable.

Why hand-kept watermarks instead of `dlt.sources.incremental`: the orders resource also emits
`order_line_items` and `_ciklek_rejects`, which dlt's incremental cannot follow
(IncrementalCursorPathMissing), and a resumable traversal needs more than a watermark: the cursor
of the next page, the cursor that fetched the last page (a no-change sync then costs one
request), and the versions on that last page (so they are not loaded again). That state and its
transitions live in `connector/traversal/`; this module turns a chunk's pages into tables.

Why generators end instead of raising: dlt discards a whole extract, state included, when a
resource raises. A quota stop, a SIGTERM or a fatal API error is recorded in the `RunReport` and
the generator returns normally, so every page fetched so far is committed with its state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.hints import TResourceHints
from dlt.extract.resource import DltResource

from connector.api.client import CiklekClient
from connector.catalogue import LEDGER_TABLE, REJECTS_TABLE, RUNS_TABLE, ResourceSpec
from connector.records.normalize import (
    DELETED_COLUMN,
    Batch,
    build_batch,
    dlt_columns,
    rejects_table,
    with_deleted_at,
)
from connector.records.undocumented import TableColumns
from connector.runs.compose import SourceSetup, bare_setup
from connector.runs.request_ledger import LEDGER_COLUMNS
from connector.runs.run_row import RUN_COLUMNS
from connector.runs.signals import stop_on_signals
from connector.runs.sweep import current_load_id, with_load_id
from connector.traversal.page_loop import Chunk, reconcile, tracker_for, walk
from connector.traversal.range_workers import RangeWalk
from connector.traversal.reconcile import IdTracker
from connector.traversal.run_report import ResourceOutcome, RunReport
from connector.traversal.state import (
    ResourceState,
    Traversal,
    Version,
    begin,
    finish,
    stop,
)
from connector.traversal.sweep_state import on_chunk as sweep_chunk

__all__ = ["ciklek_source", "make_resource"]


def _traverse(spec: ResourceSpec, setup: SourceSetup) -> Iterator[object]:
    """One chunk of one resource: pages until the chunk, the run or the traversal ends."""
    raw_state = dlt.current.resource_state()
    state = ResourceState.load(raw_state)
    config = setup.config
    trav = begin(
        state,
        window=config.window,
        lookback_seconds=config.lookback_seconds,
        full_refresh=config.full_refresh,
        sweep=config.sweep,
    )
    out = setup.report.outcome(spec.name)
    signals = stop_on_signals(setup.report.stop_event) if setup.loud else contextlib.nullcontext()
    with setup.report.gate.slot(), setup.client.borrow() as client, signals:
        walked = _walked(spec, state, trav, setup, client)
    batch = build_batch(spec, walked.records, columns=_known_columns(spec, setup.report))
    if batch.rejects and not config.rejects_inline:
        # Handed over before the first yield: the `_ciklek_rejects` resource of this load may
        # be waiting for them in another thread (see `_counted`).
        out.rejects += len(batch.rejects)
        setup.report.pending_rejects.extend(batch.rejects)
    stop(trav, batch.max_cursor)
    out.chunks += 1
    if batch.parent is not None:
        out.rows += batch.parent.num_rows
        state.rows_loaded += batch.parent.num_rows
    if walked.tracker is not None:
        walked.tracker.add(walked.ids)
    if walked.complete:
        out.done = True
        out.reconciliation = reconcile(walked.tracker, trav)
        finish(state, trav, walked.last_page, walked.tail)
    if trav.kind == "sweep":
        sweep_chunk(state, trav, batch.rejects, walked.complete, current_load_id())
    state.store(raw_state)
    yield from _tables(spec, batch, out, setup)
    if setup.loud is not None:
        setup.loud.after_chunk(spec.name, out)


@dataclass(frozen=True)
class _Walked:
    """What one chunk's walk (one worker, or several over ranges) brought."""

    complete: bool
    records: list[object]
    ids: list[str]
    last_page: list[Version]
    tracker: IdTracker | None
    tail: Traversal | None = None  # the last range of a traversal walked in ranges


def _walked(
    spec: ResourceSpec,
    state: ResourceState,
    trav: Traversal,
    setup: SourceSetup,
    client: CiklekClient,
) -> _Walked:
    """One worker, or several over `updated_since` ranges (connector/traversal/range_workers.py):
    when the run allows more than one (a `ciklek sync`), or the traversal is already in ranges."""
    config = setup.config
    if trav.ranges or (config.max_concurrency > 1 and config.tracker_dir is not None):
        ranges = RangeWalk(spec, state, trav, config, setup.report, tracker_for(config, spec, trav))
        complete = ranges.run(client)
        return _Walked(
            complete, ranges.records(), ranges.ids(), ranges.last_page, ranges.tracker, ranges.tail
        )
    chunk = Chunk(spec, state, trav, config)
    complete = walk(chunk, client, setup.report)
    return _Walked(complete, chunk.records(), chunk.ids, chunk.last_page, chunk.tracker)


def _counted(spec: ResourceSpec, setup: SourceSetup) -> Iterator[object]:
    """`_traverse`, telling the load's gate once its walk is over, however it ended (an
    exception included): the walk and the rejects' hand-over happen before its first table."""
    items = _traverse(spec, setup)
    try:
        first = next(items, None)
    finally:
        setup.report.gate.walk_done()
    if first is not None:
        yield first
        yield from items


def _known_columns(spec: ResourceSpec, report: RunReport) -> TableColumns:
    """The run's undocumented-column budget, seeded with what the warehouse tables already
    have (dlt's schema), so the cap holds across chunks and runs, not only within a batch."""
    tables = dlt.current.source_schema().tables
    for table in spec.tables:
        report.columns.seed(table, tables.get(table, {}).get("columns", {}))
    return report.columns


def _tables(
    spec: ResourceSpec, batch: Batch, out: ResourceOutcome, setup: SourceSetup
) -> Iterator[object]:
    synced_at = dt.datetime.now(dt.UTC)  # this load's time: the rows it writes carry it
    if batch.parent is not None:
        yield with_synced_at(with_load_id(with_deleted_at(batch.parent)), synced_at)
    if batch.child is not None:
        out.child_rows += batch.child_items  # tombstones are not rows
        child = with_synced_at(with_deleted_at(batch.child), synced_at)
        yield dlt.mark.with_hints(child, _child_hints(spec), create_table_variant=True)
    if batch.rejects and setup.config.rejects_inline:
        out.rejects += len(batch.rejects)
        yield dlt.mark.with_hints(
            rejects_table(batch.rejects), REJECT_HINTS, create_table_variant=True
        )
    # else: handed to the `_ciklek_rejects` resource by `_traverse`, which loads them


SYNCED_AT = "_ciklek_synced_at"


def with_synced_at(table: pa.Table, at: dt.datetime) -> pa.Table:
    """`_ciklek_synced_at` on every row a load writes (dbt's `loaded_at_field`): a merge
    replaces only the rows it loads, so the column moves for those rows alone."""
    column = pa.array([at] * table.num_rows, type=pa.timestamp("us", tz="UTC"))
    return table.append_column(SYNCED_AT, column)


def _child_hints(spec: ResourceSpec) -> TResourceHints:
    assert spec.child is not None
    prefix = spec.child.table + "."
    excluded = frozenset(e[len(prefix) :] for e in spec.excluded if e.startswith(prefix))
    columns = dlt_columns(spec.child.fields, excluded)
    columns += [
        {"name": spec.child.parent_key, "data_type": "text", "nullable": False},
        {"name": DELETED_COLUMN, "data_type": "bool", "hard_delete": True},
    ]
    return dlt.mark.make_hints(
        table_name=spec.child.table,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        # No primary key on purpose: with both keys dlt deletes `WHERE d.id = s.id OR
        # d.order_id = s.order_id`, which DuckDB can only run as a nested loop (destination rows
        # x chunk rows: 5 s for 57k x 29k). The merge key alone replaces each order's item set.
        primary_key=[],
        merge_key=spec.child.parent_key,
        columns=columns,  # type: ignore[arg-type]
    )


REJECT_HINTS = dlt.mark.make_hints(
    table_name=REJECTS_TABLE, write_disposition="append", primary_key=[], merge_key=[]
)


def make_resource(spec: ResourceSpec, setup: SourceSetup) -> DltResource:
    """Column types come from the Arrow schema of every batch (declared in the catalogue).

    No `columns=` hint here on purpose: table variants (line items, rejects) inherit the
    resource's column hints, which would force order columns onto them.
    """
    return dlt.resource(
        _counted,
        name=spec.name,
        write_disposition="merge",
        primary_key=spec.primary_key,
        # Walked in dlt's worker threads, several resources at once (connector/traversal/gate.py).
        parallelized=setup.config.max_concurrency > 1,
    )(spec, setup)


def _rejects(report: RunReport, parallel: bool = False) -> Iterator[object]:
    if parallel:  # the data resources of this load walk in other threads: wait for their rejects
        report.gate.wait_walks(report.stop_event)
    rows = report.take_rejects()
    if rows:
        yield rejects_table(rows)
    elif REJECTS_TABLE not in dlt.current.source_schema().tables:
        # Created (empty) by the first sync: an analyst's or dbt's query on it must not fail
        # just because nothing was rejected yet.
        yield rejects_table([])


def _request_ledger(report: RunReport, parallel: bool = False) -> Iterator[object]:
    """This run's `_ciklek_request_ledger` row, made once the load's walks are over (the
    requests they used are in it)."""
    if report.ledger_row is None:
        return
    if parallel:
        report.gate.wait_walks(report.stop_event)
    yield [report.ledger_row()]


def _runs(report: RunReport) -> Iterator[list[dict[str, object]]]:
    for name, update in report.state_updates.items():  # recorded with the run row's load
        dlt.current.resource_state(name).update(update)
    if report.run_rows:
        yield report.run_rows


@dlt.source(name="ciklek", max_table_nesting=0)
def ciklek_source(
    # Any, not list[str]: dlt injects `sources.ciklek.resources` here, and the documented
    # comma-separated string ("orders,customers") cannot be coerced to a list.
    resources: Any = None,
    setup: SourceSetup | None = None,
) -> list[DltResource]:
    """The Ciklek source: `orders` (with `order_line_items`), `customers`, `products`.

    Called bare (`ciklek_source()`), it reads `[sources.ciklek]` through dlt's providers and
    traverses each resource to the end in one load, which is what orchestrators such as Dagster
    expect; its client is closed when the extract ends. `ciklek sync` passes its own `setup` to get
    chunked, checkpointed loads. Each source instance is one load (one chunk).
    """
    if setup is None:
        setup = bare_setup(resources)
        names = list(setup.resources)
    else:
        names = list(setup.resources if resources is None else resources)
    setup.report.start_chunk(len(names), setup.config.max_concurrency)
    selected = [make_resource(setup.catalogue[name], setup) for name in names]
    runs = dlt.resource(  # type: ignore[call-overload]
        _runs, name=RUNS_TABLE, write_disposition="append", selected=False, columns=RUN_COLUMNS
    )(setup.report)
    parallel = setup.config.max_concurrency > 1 and not setup.config.rejects_inline
    rejects = dlt.resource(
        _rejects,
        name=REJECTS_TABLE,
        write_disposition="append",
        selected=False,
        parallelized=parallel,
    )(setup.report, parallel)
    ledger = dlt.resource(  # type: ignore[call-overload]
        _request_ledger,
        name=LEDGER_TABLE,
        write_disposition="merge",
        primary_key=("run_id", "day"),
        selected=False,
        columns=LEDGER_COLUMNS,
        parallelized=parallel,
    )(setup.report, parallel)
    return [*selected, rejects, ledger, runs]
