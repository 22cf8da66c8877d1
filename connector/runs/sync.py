"""One sync run (`run_sync`): the lock, the chunk loop, and the run's end.

Why chunks: dlt commits state only when a load completes and its extract is all-or-nothing, so
one `pipeline.run` per bounded chunk (pages or seconds) means a crash, a SIGTERM or an exhausted
quota costs at most one chunk, and the next run resumes from the last committed cursor. The
parts live beside this driver: what a run is asked (`options.py`) and did (`result.py`), the
exit decision (`decide.py`), crash recovery (`recovery.py`), the run row (`run_row.py`), the
status file (`status_file.py`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Literal

import dlt
from dlt.common.destination.reference import TDestinationReferenceArg
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from connector.catalogue import LEDGER_TABLE, REJECTS_TABLE, RUNS_TABLE, SCHEMA_CHANGES_TABLE
from connector.config.settings import Settings, load_settings
from connector.errors import EXIT_OK, Unauthorized
from connector.runs.compose import SourceSetup, SyncParts, compose_sync, dlt_run_settings
from connector.runs.decide import decide
from connector.runs.events import EventLog
from connector.runs.history import finish_history, start_history
from connector.runs.lock import pipeline_dir, run_lock
from connector.runs.options import SyncOptions, check_options
from connector.runs.recovery import recover
from connector.runs.reload import start_reloads, swap_completed
from connector.runs.request_ledger import LEDGER_COLUMNS
from connector.runs.result import SyncResult
from connector.runs.run_row import RUN_COLUMNS, run_row
from connector.runs.signals import stop_on_signals
from connector.runs.source import ciklek_source
from connector.runs.status_file import StatusWriter, committed_states
from connector.runs.sweep import settle
from connector.runs.target import describe_target, quota_facts
from connector.traversal.run_config import Row, RunConfig, Window
from connector.warehouse.checks import (
    check_before_requests,
    check_column_types,
    check_destination_config,
    check_read_copy,
    check_reload,
    destination_label,
)
from connector.warehouse.destinations import resolve_destination
from connector.warehouse.faults import may_record_run, stop_on_fault
from connector.warehouse.held_open import checkpoint, held_open
from connector.warehouse.read_copy import publish_after_run
from connector.warehouse.run_log import restore_ledger, write_ledger_row, write_run_rows

__all__ = ["SyncOptions", "SyncResult", "run_sync"]


def run_sync(options: SyncOptions, *, settings: Settings | None = None) -> SyncResult:
    """Run one sync. Raises ConfigError (exit 2) or LockHeld (exit 75) before any request."""
    settings = settings or load_settings(
        resources=options.resources, page_size=options.page_size, pipeline=options.pipeline
    )
    settings.require_key()  # exit 2 before anything else when the key is missing
    settings.require_hash_key()  # hashed fields without their key: never loaded in clear
    window = check_options(options)
    destination = resolve_destination(options.destination, options.dataset, options.duckdb_file)
    started_at, started = dt.datetime.now(dt.UTC), time.monotonic()
    # dlt logs a failed load job with its traceback (`logger.exception`, level ERROR); our one
    # line per outcome says what happened, so without --debug only dlt's CRITICAL lines show.
    log_level = "INFO" if options.debug else "CRITICAL"
    with dlt_run_settings(log_level=log_level), run_lock(settings.state_dir, options.pipeline):
        pipeline = _checked_pipeline(options, settings, destination)
        with held_open(pipeline):  # a DuckDB file stays open to the run's end (why: held_open.py)
            return _run(pipeline, options, settings, window, started_at, started)


def _run(
    pipeline: dlt.Pipeline,
    options: SyncOptions,
    settings: Settings,
    window: Window | None,
    started_at: dt.datetime,
    started: float,
) -> SyncResult:
    """The run once its warehouse is open: today's count restored, the chunks, the decision."""
    restore_ledger(  # a fresh runner: today's requests from `_ciklek_sync_runs`
        pipeline,
        options.pipeline,
        settings.state_dir / "ledger.json",
        settings.require_key().fingerprint,
    )
    run_id = uuid.uuid4().hex
    stop = threading.Event()
    # Until the exit code is decided a signal stops the run cleanly (exit 75); from the
    # decision on it changes nothing (see connector/runs/signals.py).
    with stop_on_signals(stop) as signals:
        parts = compose_sync(
            settings,
            _run_config(options, settings, window),
            pipeline=options.pipeline,
            max_requests=options.max_requests,
            progress=options.progress,
            events=EventLog(options.log_format, run_id, options.log_stream),
            stop_event=stop,
            run_id=run_id,
        )
        with parts as built:
            report = built.source.report
            result = SyncResult(
                EXIT_OK, settings, report, built.log, built.quota, 0.0, run_id=run_id
            )
            describe_target(result, options)
            status = StatusWriter(options, settings, report)
            status.write(pipeline, running=True)
            with stop_on_fault(destination_label(pipeline), result):
                _chunks(pipeline, built, options, result, status)
            result.api_rate_limit = built.client.last_rate_limit
        result.elapsed = time.monotonic() - started
        decide(result, options)
        signals.decide()
        _conclude(pipeline, built, options, result, status, started_at)
    return result


def _checked_pipeline(
    options: SyncOptions, settings: Settings, destination: TDestinationReferenceArg
) -> dlt.Pipeline:
    """The run's dlt pipeline, checked before any request: destination credentials, the read
    copy, declared column types, the warehouse open (a locked or unreachable one costs no
    quota)."""
    pipeline = dlt.pipeline(
        pipeline_name=options.pipeline,
        destination=destination,
        dataset_name=options.dataset,
        pipelines_dir=str(settings.state_dir / "pipelines"),
    )
    # dlt's own handlers would swallow a SIGTERM during normalize/load (the run then goes
    # on, or fails with SignalReceivedException); ours finish the chunk and exit 75.
    pipeline.config.runtime.intercept_signals = False
    check_reload(pipeline, full_refresh=options.full_refresh, drop_first=options.drop_first)
    check_destination_config(pipeline)
    check_read_copy(pipeline, settings, options.dataset)
    check_column_types(pipeline, settings, _reloading(pipeline, settings, options))
    check_before_requests(pipeline, settings)
    return pipeline


def _reloading(pipeline: dlt.Pipeline, settings: Settings, options: SyncOptions) -> set[str]:
    """Resources this run reloads: all with --full-refresh, and those whose reload is in progress
    (a plain sync continues it): their declared types are what the reload writes."""
    if options.full_refresh:
        return set(settings.resources)
    states = committed_states(pipeline, list(settings.resources))
    return {
        n for n, st in states.items() if st.traversal is not None and st.traversal.kind == "refresh"
    }


def _run_config(options: SyncOptions, settings: Settings, window: Window | None) -> RunConfig:
    return RunConfig(
        page_size=settings.page_size,
        chunk_pages=settings.checkpoint_pages,
        chunk_seconds=settings.checkpoint_seconds,
        lookback_seconds=settings.lookback_seconds,
        window=window,
        full_refresh=options.full_refresh,
        reload_in_place=options.drop_first,
        tracker_dir=pipeline_dir(settings.state_dir, options.pipeline) / "traversals",
        rejects_inline=False,
        sweep=options.sweep,
        max_concurrency=settings.max_concurrency,
        hash_key=settings.require_hash_key(),
        history=frozenset(settings.history),
    )


def _chunks(
    pipeline: dlt.Pipeline,
    parts: SyncParts,
    options: SyncOptions,
    result: SyncResult,
    status: StatusWriter,
) -> None:
    """One `pipeline.run` per chunk until every resource is finished or the run must stop."""
    setup = parts.source
    pending = list(setup.resources)
    recover(pipeline)
    # A reload that completed in a run stopped before its swap: swapped in before anything else.
    result.swapped += swap_completed(pipeline, list(setup.catalogue), setup.report)
    start_history(pipeline, setup, result.settings)  # `history` just switched on: seed it
    _record_allowance(pipeline, parts)
    if options.sweep:  # a completed sweep kept from an earlier run: apply or refuse it first
        settle(pipeline, result.settings, setup.report, pending, force=options.force)
        pending = [n for n in pending if not setup.report.outcome(n).finished]
    # --full-refresh starts a reload once; a reload that stopped early is continued instead.
    states = committed_states(pipeline, pending) if options.full_refresh else {}
    reload = [
        n for n, st in states.items() if st.traversal is None or st.traversal.kind != "refresh"
    ]
    if reload and not options.drop_first:
        start_reloads(pipeline, reload, setup.catalogue)  # built beside, swapped in at the end
        reload = []
    report = setup.report
    while pending:
        names: list[str] = pending
        refresh: Literal["drop_resources"] | None = None
        if reload:  # --drop-first: dlt empties the tables now (no safe swap, or asked for)
            names, refresh, reload = reload, "drop_resources", []
        source = ciklek_source(resources=names, setup=setup)
        if refresh is None:  # a refresh would drop these tables: carry them to the next load
            source = source.with_resources(
                *names, REJECTS_TABLE, SCHEMA_CHANGES_TABLE, LEDGER_TABLE
            )
        if refresh is None:
            pipeline.run(source)
        else:
            pipeline.run(source, refresh=refresh)
            result.dropped += [t for n in names for t in setup.catalogue[n].tables]
        checkpoint(pipeline)  # the chunk in the DuckDB file itself, as a close would leave it
        result.swapped += swap_completed(pipeline, names, report)  # a reload just completed
        if parts.ledger is not None:
            parts.ledger.committed()  # the next chunk may send what this load recorded
        result.quota.flush()  # the unused reservation back: `status` reads today's count
        status.write(pipeline, running=True)
        pending = [n for n in pending if not report.outcome(n).finished]
        fatal = [o for o in report.outcomes.values() if isinstance(o.error, Unauthorized)]
        if report.stops() or fatal:
            break
    if options.sweep:  # the sweeps this run completed, now that their last chunk is committed
        settle(pipeline, result.settings, report, list(setup.resources), force=options.force)
    finish_history(pipeline, result.settings, list(setup.resources))  # the `_history` views


def _record_allowance(pipeline: dlt.Pipeline, parts: SyncParts) -> None:
    """Before the run's first request: a small load recording the first chunk's allowance in
    `_ciklek_request_ledger`, so a runner that rebuilds the day's count from the warehouse
    counts this run even if it is killed before its first commit."""
    if parts.ledger is None:
        return
    row = parts.ledger.next_row()
    if LEDGER_TABLE in _existing_tables(pipeline):  # one INSERT: no load needed for one row
        try:
            write_ledger_row(pipeline, row)
            parts.ledger.committed()
            return
        except DatabaseUndefinedRelation:  # the warehouse lost it (a file deleted): load it
            pass
    tables = [LEDGER_TABLE]
    if _writes_run_rows_directly(pipeline) and not parts.source.report.state_updates:
        tables.append(RUNS_TABLE)  # created empty beside it: the run row is then an INSERT
    source = ciklek_source(resources=[], setup=parts.source).with_resources(*tables)
    pipeline.run(source)  # the first run: dlt creates the table(s)
    parts.ledger.committed()


def _existing_tables(pipeline: dlt.Pipeline) -> set[str]:
    """Tables dlt's schema knows with columns, i.e. created in the warehouse by a past load."""
    if pipeline.default_schema_name is None:
        return set()
    tables = pipeline.default_schema.tables
    return {name for name, table in tables.items() if table.get("columns")}


def _conclude(
    pipeline: dlt.Pipeline,
    parts: SyncParts,
    options: SyncOptions,
    result: SyncResult,
    status: StatusWriter,
    started_at: dt.datetime,
) -> None:
    """After the decision: the run row (and the request ledger's row closed), the read copy,
    the final status."""
    row = run_row(result, options, started_at)
    if may_record_run(pipeline, result):
        if parts.ledger is not None:
            parts.source.report.ledger_row = parts.ledger.closing_row
        _record_run(pipeline, parts.source, row, result)
    publish_after_run(pipeline, result.settings, result, row)
    states = committed_states(pipeline, list(result.settings.resources))
    result.watermarks = {n: s.watermark for n, s in states.items()}
    status.write(pipeline, running=False, last_run={**row, **quota_facts(result)})


def _record_run(pipeline: dlt.Pipeline, setup: SourceSetup, row: Row, result: SyncResult) -> None:
    """The `_ciklek_sync_runs` row, with the rejects a refresh held back."""
    setup.report.run_rows = [row]
    try:  # (the outcome is decided: a signal changes nothing now)
        closing = setup.report.ledger_row
        if closing is not None and _run_rows_alone(pipeline, setup):
            try:
                write_run_rows(pipeline, row, closing())
                return
            except Exception:  # whatever the shortcut met, the load below writes the same
                pass
        pipeline.run(
            ciklek_source(resources=[], setup=setup).with_resources(
                RUNS_TABLE, REJECTS_TABLE, SCHEMA_CHANGES_TABLE, LEDGER_TABLE
            )
        )
    except Exception as exc:  # the data is in; failing to write the run row is secondary
        result.messages.append(f"could not write {RUNS_TABLE}: {type(exc).__name__}")


DIRECT_WRITE_DESTINATIONS = ("duckdb", "postgres")  # the SQL of run_log.py is tested on these


def _writes_run_rows_directly(pipeline: dlt.Pipeline) -> bool:
    return pipeline.destination.destination_name in DIRECT_WRITE_DESTINATIONS


def _run_rows_alone(pipeline: dlt.Pipeline, setup: SourceSetup) -> bool:
    """Whether the run row's load would carry nothing but the run row and the ledger's closing
    row into tables that already hold every column of them: then two INSERTs write what the
    load would, in milliseconds instead of half a second (bench/RESULTS.md section 7).
    Anything else (rejects or versions held back, a schema change noted in this run, resource
    state to commit, a table or column still to create, another destination) goes through
    dlt."""
    report = setup.report
    if report.pending_rejects or report.pending_versions or report.state_updates:
        return False
    if report.columns.changes():
        return False
    if not _writes_run_rows_directly(pipeline):
        return False
    if pipeline.default_schema_name is None:
        return False
    tables = pipeline.default_schema.tables
    needed = {RUNS_TABLE: RUN_COLUMNS, LEDGER_TABLE: LEDGER_COLUMNS}
    for name, columns in needed.items():
        have = tables.get(name, {}).get("columns") or {}
        if any(c["name"] not in have for c in columns):
            return False
    return all(tables.get(t, {}).get("columns") for t in (REJECTS_TABLE, SCHEMA_CHANGES_TABLE))
