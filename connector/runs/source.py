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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.hints import TResourceHints
from dlt.extract.resource import DltResource

from connector.api.client import CiklekClient
from connector.catalogue import (
    CATALOGUE,
    LEDGER_TABLE,
    REJECTS_TABLE,
    RUNS_TABLE,
    SCHEMA_CHANGES_TABLE,
    ResourceSpec,
)
from connector.records.history import VersionRows, distinct, version_rows
from connector.records.normalize import (
    DELETED_COLUMN,
    Batch,
    RejectRow,
    build_batch,
    dlt_columns,
    rejects_table,
    schema_change_row,
    schema_changes_table,
    with_deleted_at,
)
from connector.records.undocumented import TableColumns
from connector.runs.compose import SourceSetup, bare_setup
from connector.runs.request_ledger import LEDGER_COLUMNS
from connector.runs.run_row import RUN_COLUMNS, empty_runs_table
from connector.runs.signals import stop_on_signals
from connector.runs.sweep import current_load_id, with_load_id
from connector.traversal.page_loop import Chunk, reconcile, tracker_for, walk
from connector.traversal.range_workers import RangeWalk
from connector.traversal.reconcile import IdTracker
from connector.traversal.run_report import ResourceOutcome, RunReport
from connector.traversal.state import (
    PageVersions,
    ResourceState,
    Traversal,
    Version,
    begin,
    finish,
    remember,
    stop,
)
from connector.traversal.sweep_state import on_chunk as sweep_chunk
from connector.warehouse.reload import shadow_name, swap_record

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
        in_place=config.reload_in_place,
    )
    out = setup.report.outcome(spec.name)
    signals = stop_on_signals(setup.report.stop_event) if setup.loud else contextlib.nullcontext()
    with setup.report.gate.slot(), setup.client.borrow() as client, signals:
        walked = _walked(spec, state, trav, setup, client)
    columns = _known_columns(spec, setup.report)
    batch = build_batch(spec, walked.records, columns=columns)
    synced_at = dt.datetime.now(dt.UTC)  # this load's time: the rows it writes carry it
    versions, rejects = _versions(spec, batch, walked, columns, synced_at)
    if not config.rejects_inline:
        # Handed over before the first yield: the `_ciklek_rejects` resource of this load may
        # be waiting for them in another thread (see `_counted`).
        out.rejects += len(rejects)
        setup.report.pending_rejects.extend(rejects)
        setup.report.pending_versions.extend(versions)
    stop(trav, batch.max_cursor)
    remember(trav, walked.pages, config.lookback_seconds, state.watermark)
    out.chunks += 1
    if batch.parent is not None:
        out.rows += batch.parent.num_rows
        state.rows_loaded += batch.parent.num_rows
    if walked.tracker is not None:
        walked.tracker.add(walked.ids)
    shadow = trav.kind == "refresh" and not trav.in_place  # a reload, built beside the tables
    complete = walked.complete
    if complete and walked.tracker is not None:
        out.reconciliation = reconcile(walked.tracker, trav)
    if trav.kind == "sweep":  # a sweep's walk ends with a re-read of what changed meanwhile
        complete = sweep_chunk(
            state, trav, batch.rejects, complete, current_load_id(), config.lookback_seconds
        )
    if complete:
        out.done = True
        finish(state, trav, walked.last_page, walked.tail)
        if shadow:  # committed with the reload's last rows; swapped in once they are
            state.swap = swap_record(spec.tables)
    state.store(raw_state)
    if config.rejects_inline:
        yield from _tables(spec, batch, out, synced_at, rejects, versions, shadow=shadow)
    else:
        yield from _tables(spec, batch, out, synced_at, shadow=shadow)
    if setup.loud is not None:
        setup.loud.after_chunk(spec.name, out)


def _versions(
    spec: ResourceSpec,
    batch: Batch,
    walked: _Walked,
    columns: TableColumns,
    synced_at: dt.datetime,
) -> tuple[list[VersionRows], list[RejectRow]]:
    """With history: the chunk's versions (the newest of each record from `batch`, those it
    superseded in this chunk normalised on their own), and every reject of the chunk (a
    superseded version that breaks the contract is quarantined like any other)."""
    if walked.every is None:
        return [], list(batch.rejects)
    newest = {id(record) for record in walked.records}
    older = [record for record in walked.every if id(record) not in newest]
    extra = build_batch(spec, older, columns=columns) if older else None
    batches = [batch] if extra is None else [batch, extra]
    versions = [
        VersionRows(v.table, v.key, with_synced_at(v.rows, synced_at))
        for v in version_rows(spec, batches)
    ]
    return versions, [*batch.rejects, *(extra.rejects if extra else [])]


@dataclass(frozen=True)
class _Walked:
    """What one chunk's walk (one worker, or several over ranges) brought."""

    complete: bool
    records: list[object]
    ids: list[str]
    last_page: list[Version]
    tracker: IdTracker | None
    tail: Traversal | None = None  # the last range of a traversal walked in ranges
    every: list[object] | None = None  # with history: every keyed version loaded, in fetch order
    pages: list[PageVersions] = field(default_factory=list)  # for the look-back (`remember`)


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
        every = ranges.versions() if spec.name in config.history else None
        return _Walked(
            complete,
            ranges.records(),
            ranges.ids(),
            ranges.last_page,
            ranges.tracker,
            ranges.tail,
            every,
            ranges.pages(),
        )
    chunk = Chunk(spec, state, trav, config)
    complete = walk(chunk, client, setup.report)
    return _Walked(
        complete,
        chunk.records(),
        chunk.ids,
        chunk.last_page,
        chunk.tracker,
        every=chunk.every,
        pages=chunk.pages,
    )


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
    spec: ResourceSpec,
    batch: Batch,
    out: ResourceOutcome,
    synced_at: dt.datetime,
    rejects: Sequence[RejectRow] = (),
    versions: Sequence[VersionRows] = (),
    *,
    shadow: bool = False,
) -> Iterator[object]:
    """The chunk's tables; `rejects` and `versions` only where this resource loads them itself
    (a bare source; else `_traverse` handed them to the `_ciklek_rejects` resource). A reload
    (`shadow`) writes into its shadow tables beside the live ones (`connector/runs/reload.py`
    swaps them in when the reload completes); its versions go where every version goes."""
    if batch.parent is not None:
        parent = with_synced_at(with_load_id(with_deleted_at(batch.parent)), synced_at)
        if shadow:
            hints = dlt.mark.make_hints(
                table_name=shadow_name(spec.name),
                write_disposition="merge",
                primary_key=spec.primary_key,
            )
            yield dlt.mark.with_hints(parent, hints, create_table_variant=True)
        else:
            yield parent
    if batch.child is not None and spec.child is not None:
        out.child_rows += batch.child_items  # tombstones are not rows
        child = with_synced_at(with_deleted_at(batch.child), synced_at)
        table = shadow_name(spec.child.table) if shadow else spec.child.table
        yield dlt.mark.with_hints(child, _child_hints(spec, table), create_table_variant=True)
    if rejects:
        out.rejects += len(rejects)
        yield dlt.mark.with_hints(rejects_table(rejects), REJECT_HINTS, create_table_variant=True)
    yield from _version_tables(versions)


def _version_tables(versions: Sequence[VersionRows]) -> Iterator[object]:
    """`<table>_versions`: merged on the version's key, so a version fetched again (a retry,
    a range, a kill, a sweep, a look-back) replaces itself, never adds a row. Replaced rather
    than inserted only when new: a version a sweep marked deleted that the API lists again is
    live again (its `_ciklek_deleted_at` back to null), as in the current table. delete-insert,
    the strategy of every table of ours: a destination that takes the current tables (checked
    before any request, `warehouse/merge_check.py`) takes the versions (redshift, for one, has
    no upsert)."""
    for part in distinct(versions):
        hints = dlt.mark.make_hints(
            table_name=part.table,
            write_disposition={"disposition": "merge", "strategy": "delete-insert"},
            primary_key=list(part.key),
            merge_key=[],
        )
        yield dlt.mark.with_hints(part.rows, hints, create_table_variant=True)


SYNCED_AT = "_ciklek_synced_at"


def with_synced_at(table: pa.Table, at: dt.datetime) -> pa.Table:
    """`_ciklek_synced_at` on every row a load writes (dbt's `loaded_at_field`): a merge
    replaces only the rows it loads, so the column moves for those rows alone."""
    column = pa.array([at] * table.num_rows, type=pa.timestamp("us", tz="UTC"))
    return table.append_column(SYNCED_AT, column)


def _child_hints(spec: ResourceSpec, table: str) -> TResourceHints:
    assert spec.child is not None
    prefix = spec.child.table + "."
    excluded = frozenset(e[len(prefix) :] for e in spec.excluded if e.startswith(prefix))
    columns = dlt_columns(spec.child.fields, excluded)
    columns += [
        {"name": spec.child.parent_key, "data_type": "text", "nullable": False},
        {"name": DELETED_COLUMN, "data_type": "bool", "hard_delete": True},
    ]
    return dlt.mark.make_hints(
        table_name=table,
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
    """The rejects and the versions (`history`) the data resources of this load handed over
    (and those a full refresh's first load held back): a resource of their own, never
    selected in a refresh, so dlt's `drop_resources` never drops them with a data resource."""
    if parallel:  # the data resources of this load walk in other threads: wait for their rejects
        report.gate.wait_walks(report.stop_event)
    rows = report.take_rejects()
    if rows:
        yield rejects_table(rows)
    elif REJECTS_TABLE not in dlt.current.source_schema().tables:
        # Created (empty) by the first sync: an analyst's or dbt's query on it must not fail
        # just because nothing was rejected yet.
        yield rejects_table([])
    yield from _version_tables(report.take_versions())


SEEN_CHANGES = "schema_changes_seen"  # source state: every change recorded so far, by key
MAX_SEEN_CHANGES = 10_000  # a hostile server inventing fields cannot grow the state forever


def _schema_changes(report: RunReport, parallel: bool = False) -> Iterator[object]:
    """`_ciklek_schema_changes`: each change the run noted that no earlier load recorded, once;
    recorded with the state that remembers it (one load), told as an event as it is."""
    if parallel:  # the data resources of this load walk in other threads: wait for their notes
        report.gate.wait_walks(report.stop_event)
    state = dlt.current.source_state()
    seen: list[str] = list(state.get(SEEN_CHANGES) or [])
    known = set(seen)
    new = [c for c in report.columns.changes() if c.key not in known]
    if new:
        at = dt.datetime.now(dt.UTC)
        rows = [schema_change_row(c, report.run_id, _resource_of(c.table), at) for c in new]
        state[SEEN_CHANGES] = (seen + [c.key for c in new])[-MAX_SEEN_CHANGES:]
        report.recorded_changes.extend(rows)
        if report.on_event is not None:
            for row in rows:
                fields = {k: row[k] for k in ("resource", "table_name", "column", "change")}
                report.on_event("schema_change", {**fields, "example": row["example_record_id"]})
        yield schema_changes_table(rows)
    elif SCHEMA_CHANGES_TABLE not in dlt.current.source_schema().tables:
        yield schema_changes_table([])  # created, empty, by the first sync (like the rejects)


def _resource_of(table: str) -> str:
    """The resource a table of ours belongs to (line items belong to orders)."""
    return next((s.name for s in CATALOGUE.values() if table in s.tables), table)


def _request_ledger(report: RunReport, parallel: bool = False) -> Iterator[object]:
    """This run's `_ciklek_request_ledger` row, made once the load's walks are over (the
    requests they used are in it)."""
    if report.ledger_row is None:
        return
    if parallel:
        report.gate.wait_walks(report.stop_event)
    yield [report.ledger_row()]


def _runs(report: RunReport) -> Iterator[object]:
    for name, update in report.state_updates.items():  # recorded with the run row's load
        dlt.current.resource_state(name).update(update)
    if report.run_rows:
        yield report.run_rows
    elif RUNS_TABLE not in dlt.current.source_schema().tables:
        yield empty_runs_table()  # selected only by a run's first allowance (runs/sync.py)


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
    changes = dlt.resource(
        _schema_changes,
        name=SCHEMA_CHANGES_TABLE,
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
    return [*selected, rejects, changes, ledger, runs]
