"""The dlt source: one resource per catalogue entry, incremental, chunked, resumable.

Why hand-kept watermarks instead of `dlt.sources.incremental`: the orders resource also emits
`order_line_items` and `_ciklek_rejects`, which dlt's incremental cannot follow
(IncrementalCursorPathMissing), and a resumable traversal needs more than a watermark: the cursor
of the next page, the cursor that fetched the last page (a no-change sync then costs one
request), and the versions on that last page (so they are not loaded again). That state and its
transitions live in `traversal.py`; this module fetches pages and turns them into tables.

Why generators end instead of raising: dlt discards a whole extract, state included, when a
resource raises. A quota stop, a SIGTERM or a fatal API error is recorded in the `RunReport` and
the generator returns normally, so every page fetched so far is committed with its state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.hints import TResourceHints
from dlt.extract.resource import DltResource

from connector.catalogue import REJECTS_TABLE, RUNS_TABLE, ResourceSpec
from connector.client import CiklekClient, Page
from connector.compose import SourceRun, bare_source_run
from connector.errors import (
    ApiError,
    BadRequest,
    CiklekUnavailable,
    ContractViolation,
    MissingScope,
    StopRequested,
    TryLater,
    Unauthorized,
)
from connector.normalize import (
    DELETED_COLUMN,
    Batch,
    Invalid,
    build_batch,
    dlt_columns,
    parse_instant,
    rejects_table,
    with_deleted_at,
)
from connector.outcome import stop_on_signals
from connector.reconcile import IdTracker, Reconciliation
from connector.run import ResourceOutcome, RunConfig, RunReport
from connector.sweep import on_chunk as sweep_chunk
from connector.sweep import with_load_id
from connector.traversal import (
    PageFacts,
    Position,
    ResourceState,
    Traversal,
    Version,
    accept_page,
    begin,
    finish,
    id_digest,
    instant,
    iso,
    restart,
    stop,
)
from connector.undocumented import TableColumns, bounded_json, key_text

__all__ = ["ciklek_source", "instant", "iso", "make_resource", "parse_instant"]


class _Chunk:
    """One resource's share of one load: its traversal, and the records fetched for it."""

    def __init__(
        self, spec: ResourceSpec, state: ResourceState, trav: Traversal, config: RunConfig
    ):
        self.spec, self.state, self.trav, self.config = spec, state, trav, config
        self.until = instant(trav.until)
        self.latest: dict[str, object] = {}  # by id: a later version in the same chunk wins
        self.loose: list[object] = []  # records without an id: build_batch rejects them
        self.ids: list[str] = []
        self.last_page: list[Version] = []
        self.restarted()

    def restarted(self) -> None:
        """(Re)read what the traversal carries: versions to skip, the id tracker."""
        self.skip = set(self.trav.skip)
        self.known = {version[0] for version in self.skip}
        self.carried = set(self.trav.page_ids)  # the previous chunk's last page
        self.tracker: IdTracker | None = None
        if self.config.tracker_dir is not None and self.trav.fresh:
            path = self.config.tracker_dir / f"{self.spec.name}-{self.trav.id}.ids"
            self.tracker = IdTracker(path)

    def take(self, page: Page) -> PageFacts:
        """Keep the page's records; tell the traversal what the page brought."""
        spec, self.last_page = self.spec, []
        new_ids, ids, versions = False, [], []
        for record in page.records:
            record_id = record.get(spec.primary_key) if isinstance(record, dict) else None
            cursor = _cursor_of(record, spec)
            if record_id is None:
                # No id: rejected by build_batch. Remember it like any other version on the last
                # page, so a resume that re-reads that page does not quarantine it again.
                version = (_fingerprint(record), cursor)
                self.last_page.append(version)
                if version not in self.skip:
                    self.loose.append(record)
                continue
            if self.until is not None and _at_or_after(cursor, self.until):
                continue  # outside the window; the traversal ends with the page that passes it
            record_id = key_text(record_id)
            new_ids = new_ids or not self._seen(record_id)
            self.ids.append(record_id)
            ids.append(record_id)
            self.known.add(record_id)
            versions.append((record_id, cursor))
            self.last_page.append((record_id, cursor))
            if (record_id, cursor) not in self.skip:  # else: loaded by the previous traversal
                self.latest.pop(record_id, None)
                self.latest[record_id] = record
        last = page.records[-1] if page.records else None
        return PageFacts(
            next_cursor=page.next_cursor,
            total=page.total,
            received=len(ids),
            # Lists are ordered by updated_at: a page ending past --until ends the window.
            reached_until=self.until is not None
            and _at_or_after(_cursor_of(last, spec), self.until),
            new_ids=new_ids,
            # Only a page without a new id needs its position (parsing every timestamp costs),
            # and the first one, which sets where the traversal stands.
            furthest=_furthest(versions) if not new_ids or self.trav.position is None else None,
            endpoint="/" + spec.path,
            ids=tuple(ids),
        )

    def _seen(self, record_id: str) -> bool:
        if record_id in self.known or id_digest(record_id) in self.carried:
            return True
        return self.tracker is not None and record_id in self.tracker.ids

    def records(self) -> list[object]:
        return [*self.loose, *self.latest.values()]

    def reconcile(self) -> Reconciliation | None:
        """A complete traversal compared with meta.total; the id file is no longer needed."""
        tracker, trav = self.tracker, self.trav
        if tracker is None:
            return None
        result = None
        if trav.total is not None and not trav.until:
            # (a window's meta.total also counts records past --until: nothing to compare with)
            result = Reconciliation(
                expected=trav.total, distinct=len(tracker.ids), received=trav.received
            )
        tracker.discard()
        return result


def _traverse(spec: ResourceSpec, run: SourceRun) -> Iterator[object]:
    """One chunk of one resource: pages until the chunk, the run or the traversal ends."""
    raw_state = dlt.current.resource_state()
    state = ResourceState.load(raw_state)
    config = run.config
    trav = begin(
        state,
        window=config.window,
        lookback_seconds=config.lookback_seconds,
        full_refresh=config.full_refresh,
        sweep=config.sweep,
    )
    chunk = _Chunk(spec, state, trav, config)
    out = run.report.outcome(spec.name)
    signals = stop_on_signals(run.report.stop_event) if run.loud else contextlib.nullcontext()
    with run.report.gate.slot(), run.client.borrow() as client, signals:
        complete = _walk(chunk, client, run.report)
    batch = build_batch(spec, chunk.records(), columns=_known_columns(spec, run.report))
    if batch.rejects and not config.rejects_inline:
        # Handed over before the first yield: the `_ciklek_rejects` resource of this load may
        # be waiting for them in another thread (see `_counted`).
        out.rejects += len(batch.rejects)
        run.report.pending_rejects.extend(batch.rejects)
    stop(trav, batch.max_cursor)
    out.chunks += 1
    if batch.parent is not None:
        out.rows += batch.parent.num_rows
        state.rows_loaded += batch.parent.num_rows
    if chunk.tracker is not None:
        chunk.tracker.add(chunk.ids)
    if complete:
        out.done = True
        out.reconciliation = chunk.reconcile()
        finish(state, trav, chunk.last_page)
    if trav.kind == "sweep":
        sweep_chunk(state, trav, batch.rejects, complete)
    state.store(raw_state)
    yield from _tables(spec, batch, out, run)
    if run.loud is not None:
        run.loud.after_chunk(spec.name, out)


def _counted(spec: ResourceSpec, run: SourceRun) -> Iterator[object]:
    """`_traverse`, telling the load's gate once its walk is over, however it ended (an
    exception included): the walk and the rejects' hand-over happen before its first table."""
    items = _traverse(spec, run)
    try:
        first = next(items, None)
    finally:
        run.report.gate.walk_done()
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


def _walk(chunk: _Chunk, client: CiklekClient, report: RunReport) -> bool:
    """Fetch pages until something says stop; True when the traversal reached its end."""
    spec, trav, config = chunk.spec, chunk.trav, chunk.config
    out = report.outcome(spec.name)
    pages, started = 0, time.monotonic()
    while not _pause(report, config, out, pages, started):
        if not report.gate.reserve(config.chunk_pages):  # the load is full (all resources)
            return False
        try:
            page = client.fetch_page(
                spec.path, limit=config.page_size, after=trav.after, updated_since=trav.since
            )
        except BadRequest as exc:
            report.gate.release()
            if not restart(chunk.state, trav, config.lookback_seconds):
                out.error = exc
                return False
            # The server no longer accepts our stored cursor: start over from updated_since
            # rather than failing every future run.
            out.notes.append(
                f"stored cursor rejected ({exc.code or 400}); restarted from updated_since"
            )
            chunk.restarted()
            continue
        except (ApiError, TryLater, ContractViolation) as exc:
            report.gate.release()
            _failed(spec, report, out, exc)
            return False
        pages += 1
        before = len(chunk.latest) + len(chunk.loose)
        facts = chunk.take(page)
        out.new_records += len(chunk.latest) + len(chunk.loose) - before
        if out.first_page is None:
            out.first_page = page.page
        try:
            done: bool | ContractViolation = accept_page(trav, facts)
        except ContractViolation as exc:
            done = exc  # the page counts and its records load; the traversal stops here
        out.pages += 1
        out.records += len(page.records)
        out.total = trav.total if trav.total is not None else page.total
        out.traversal_pages = trav.pages
        if report.on_page is not None:
            report.on_page(spec.name, out)
        if isinstance(done, ContractViolation):
            out.error = done
            return False
        if done:
            return True
    return False


def _pause(
    report: RunReport, config: RunConfig, out: ResourceOutcome, pages: int, started: float
) -> bool:
    """Stop fetching: a signal, another resource's halt, or the chunk is full."""
    if report.stop_event.is_set():
        out.stop = StopRequested("stopped by signal")
        return True
    if report.halt is not None:  # another resource hit a 401 or the quota: don't spend more
        if isinstance(report.halt, TryLater):
            out.stop = report.halt
        elif isinstance(report.halt, ApiError):
            out.error = report.halt
        return True
    if config.chunk_pages and report.chunk_pages >= config.chunk_pages:
        return True
    return bool(
        config.chunk_seconds and pages and time.monotonic() - started >= config.chunk_seconds
    )


def _failed(
    spec: ResourceSpec,
    report: RunReport,
    out: ResourceOutcome,
    exc: ApiError | TryLater | ContractViolation,
) -> None:
    if isinstance(exc, TryLater):
        out.stop = exc
        if not isinstance(exc, CiklekUnavailable):  # one endpoint down is not all of them
            report.halt = exc
        return
    if isinstance(exc, MissingScope):
        exc.resource, exc.scope = spec.name, spec.scope
    elif isinstance(exc, Unauthorized):
        report.halt = exc
    out.error = exc


def _tables(
    spec: ResourceSpec, batch: Batch, out: ResourceOutcome, run: SourceRun
) -> Iterator[object]:
    synced_at = dt.datetime.now(dt.UTC)  # this load's time: the rows it writes carry it
    if batch.parent is not None:
        yield with_synced_at(with_load_id(with_deleted_at(batch.parent)), synced_at)
    if batch.child is not None:
        out.child_rows += batch.child_items  # tombstones are not rows
        child = with_synced_at(with_deleted_at(batch.child), synced_at)
        yield dlt.mark.with_hints(child, _child_hints(spec), create_table_variant=True)
    if batch.rejects and run.config.rejects_inline:
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


def _fingerprint(record: object) -> str:
    """A stable stand-in id for a record without one, for the last-page versions."""
    text = bounded_json(record, sort_keys=True)  # a poison record must not crash the traversal
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _cursor_of(record: object, spec: ResourceSpec) -> str | int | float | bool | None:
    value = record.get(spec.cursor_field) if isinstance(record, dict) else None
    return (
        value if value is None or isinstance(value, str | int | float | bool) else key_text(value)
    )


def _parsed(value: object) -> dt.datetime | None:
    try:
        return parse_instant(value)
    except Invalid:
        return None


def _at_or_after(value: object, bound: dt.datetime) -> bool:
    parsed = _parsed(value)
    return parsed is not None and parsed >= bound


def _furthest(versions: list[Version]) -> Position | None:
    """The page's furthest (updated_at, id): how far along the list order it reaches."""
    positions = [(at, rid) for rid, cursor in versions if (at := _parsed(cursor)) is not None]
    return max(positions, default=None)


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


def make_resource(spec: ResourceSpec, run: SourceRun) -> DltResource:
    """Column types come from the Arrow schema of every batch (declared in the catalogue).

    No `columns=` hint here on purpose: table variants (line items, rejects) inherit the
    resource's column hints, which would force order columns onto them.
    """
    return dlt.resource(
        _counted,
        name=spec.name,
        write_disposition="merge",
        primary_key=spec.primary_key,
        # Walked in dlt's worker threads, several resources at once (connector/concurrency.py).
        parallelized=run.config.max_concurrency > 1,
    )(spec, run)


RUN_COLUMNS: list[dict[str, object]] = [
    {"name": "run_id", "data_type": "text"},
    {"name": "pipeline", "data_type": "text"},
    {"name": "kind", "data_type": "text"},
    {"name": "started_at", "data_type": "timestamp", "timezone": True},
    {"name": "ended_at", "data_type": "timestamp", "timezone": True},
    {"name": "outcome", "data_type": "text"},
    {"name": "exit_code", "data_type": "bigint"},
    {"name": "resources", "data_type": "text"},
    {"name": "rows", "data_type": "bigint"},
    {"name": "line_item_rows", "data_type": "bigint"},
    {"name": "rejects", "data_type": "bigint"},
    {"name": "requests", "data_type": "bigint"},
    {"name": "rate_limited", "data_type": "bigint"},
    {"name": "waited_seconds", "data_type": "double"},
    {"name": "message", "data_type": "text"},
    {"name": "rows_marked_deleted", "data_type": "bigint"},
]


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
    run: SourceRun | None = None,
) -> list[DltResource]:
    """The Ciklek source: `orders` (with `order_line_items`), `customers`, `products`.

    Called bare (`ciklek_source()`), it reads `[sources.ciklek]` through dlt's providers and
    traverses each resource to the end in one load, which is what orchestrators such as Dagster
    expect; its client is closed when the extract ends. `ciklek sync` passes its own `run` to get
    chunked, checkpointed loads. Each source instance is one load (one chunk).
    """
    if run is None:
        run = bare_source_run(resources)
        names = list(run.resources)
    else:
        names = list(run.resources if resources is None else resources)
    run.report.start_chunk(len(names), run.config.max_concurrency)
    selected = [make_resource(run.catalogue[name], run) for name in names]
    runs = dlt.resource(  # type: ignore[call-overload]
        _runs, name=RUNS_TABLE, write_disposition="append", selected=False, columns=RUN_COLUMNS
    )(run.report)
    parallel = run.config.max_concurrency > 1 and not run.config.rejects_inline
    rejects = dlt.resource(
        _rejects,
        name=REJECTS_TABLE,
        write_disposition="append",
        selected=False,
        parallelized=parallel,
    )(run.report, parallel)
    return [*selected, rejects, runs]
