"""One sync run: lock, chunked commits, quota stops, reconciliation, the run record.

Why chunks: dlt commits state only when a load completes and its extract is all-or-nothing, so
one `pipeline.run` per bounded chunk (pages or seconds) means a crash, a SIGTERM or an exhausted
quota costs at most one chunk, and the next run resumes from the last committed cursor.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import dlt
import pendulum
import pendulum.parsing.exceptions
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.destination.reference import TDestinationReferenceArg
from dlt.common.storages.load_package import PackageStorage

from connector.catalogue import REJECTS_TABLE, RUNS_TABLE
from connector.compose import SourceRun, compose_sync, dlt_run_settings
from connector.destination_run import (
    check_before_requests,
    check_read_copy,
    destination_exit_code,
    may_record_run,
    publish_after_run,
    stop_on_fault,
)
from connector.destinations import resolve_destination
from connector.errors import (
    EXIT_AUTH,
    EXIT_BUG,
    EXIT_DESTINATION,
    EXIT_OK,
    EXIT_PRECEDENCE,
    EXIT_STRICT,
    EXIT_SWEEP_REFUSED,
    EXIT_TEMPFAIL,
    ApiError,
    BudgetSpent,
    CiklekError,
    ConfigError,
    ContractViolation,
    MissingScope,
    QuotaExhausted,
    TryLater,
    Unauthorized,
)
from connector.jsonlog import EventLog, stamp
from connector.ledger import QuotaLedger, RequestLog
from connector.outcome import stop_on_signals
from connector.run import Row, RunConfig, RunReport, Window
from connector.run_history import restore_ledger
from connector.runstate import pipeline_dir, read_status, run_lock, write_status
from connector.settings import Settings, load_settings, scrub
from connector.source import ciklek_source, iso
from connector.sweep import settle, sweep_status
from connector.traversal import ResourceState
from connector.where import describe_target, quota_facts


@dataclass
class SyncOptions:
    """`ciklek sync` flags; None means "from settings / default"."""

    resources: list[str] | None = None
    destination: str | None = None
    dataset: str = "ciklek"
    pipeline: str = "ciklek"
    since: str | None = None
    until: str | None = None
    full_refresh: bool = False
    max_requests: int | None = None
    strict: bool = False
    page_size: int | None = None
    progress: bool | None = None
    duckdb_file: str | None = None
    log_format: str = "text"  # "json": events as one JSON object per line on stderr
    debug: bool = False  # dlt logs at INFO instead of ERROR (unless the user set a level)
    sweep: bool = False  # `ciklek sweep`: full traversals that mark rows deleted upstream
    force: bool = False  # `ciklek sweep --force`: apply a result the guard refused


@dataclass
class SyncResult:
    exit_code: int
    settings: Settings
    report: RunReport
    log: RequestLog
    quota: QuotaLedger
    elapsed: float
    watermarks: dict[str, str | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    resume_at: dt.datetime | None = None
    run_id: str = ""
    # The typed error behind a non-zero exit code, for `raise_for_outcome()` and schedulers;
    # set by whatever decides that exit code (an API refusal, a quota stop, a destination fault).
    error: CiklekError | None = None
    # Where and what, for the summary: destination, dataset, the DuckDB file (absolute) when the
    # destination is DuckDB, the run's kind, and the tables a full refresh dropped.
    destination: str = "duckdb"
    dataset: str = "ciklek"
    duckdb_path: str | None = None
    kind: str = "sync"
    dropped: list[str] = field(default_factory=list)

    def raise_for_outcome(self) -> None:
        """Raise the typed error for anything but a clean completion (exit 0), like httpx's
        `raise_for_status()`: Unauthorized, MissingScope, QuotaExhausted, RejectsFound..."""
        from connector.outcome import raise_for_outcome

        raise_for_outcome(self)


def parse_bound(value: str | None, flag: str) -> dt.datetime | None:
    """`--since` / `--until`: any ISO 8601 form pendulum parses; a bare date is 00:00 UTC.

    pendulum rather than `fromisoformat` because users type week dates and basic formats too,
    and its default zone for offset-less input is UTC, which is the contract's meaning.
    """
    if value is None:
        return None
    try:
        parsed = pendulum.parse(value.strip())
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        parsed = None
    if not isinstance(parsed, dt.datetime):
        raise ConfigError(
            f"{flag} {value!r} is not a date or ISO 8601 timestamp "
            "(e.g. 2026-01-01 or 2026-01-01T09:00:00Z)"
        )
    return parsed.astimezone(dt.UTC)


def check_options(options: SyncOptions) -> Window | None:
    """The flags that must agree with each other; the backfill window, if any."""
    since = parse_bound(options.since, "--since")
    until = parse_bound(options.until, "--until")
    if since and until and until <= since:
        raise ConfigError("--until must be later than --since")
    if options.full_refresh and (since or until):
        raise ConfigError("--full-refresh reloads everything; it cannot be combined with a window")
    if options.sweep and (since or until or options.full_refresh):
        raise ConfigError("a sweep traverses everything: no --since, --until or --full-refresh")
    if options.force and not options.sweep:
        raise ConfigError("--force applies to `ciklek sweep` only")
    if options.max_requests is not None and options.max_requests < 1:
        raise ConfigError("--max-requests must be at least 1")
    return (since, until) if since or until else None


def check_destination_config(pipeline: dlt.Pipeline) -> None:
    """Resolve the destination's credentials now: dlt would only notice them missing after the
    first chunk was fetched, and report it as a crash rather than a configuration problem."""
    try:
        pipeline.destination_client()
    except ConfigFieldMissingException as exc:
        name = pipeline.destination.destination_name
        raise ConfigError(
            f"destination {name!r} is not configured ({', '.join(exc.fields)} missing): set "
            f"DESTINATION__{name.upper()}__{exc.fields[0].upper()} or "
            f"[destination.{name}] {exc.fields[0]} in .dlt/secrets.toml"
        ) from None


def check_column_types(pipeline: dlt.Pipeline, settings: Settings, refreshing: set[str]) -> None:
    """Refuse when a declared money field already exists in the warehouse as another type."""
    if pipeline.default_schema_name is None:
        return
    tables = pipeline.default_schema.tables
    for name in settings.resources:
        if name in refreshing:
            continue
        spec = settings.catalogue[name]
        pairs = [(spec.name, spec.fields)]
        if spec.child is not None:
            pairs.append((spec.child.table, spec.child.fields))
        for table, fields in pairs:
            columns = tables.get(table, {}).get("columns", {})
            for f in fields:
                if f.kind != "money" or f.name not in columns:
                    continue
                existing = columns[f.name].get("data_type")
                if existing not in (None, "decimal"):
                    raise ConfigError(
                        f"{table}.{f.name} is declared as money but was loaded as {existing}; "
                        f"reload it once with `ciklek sync --resources {name} --full-refresh`"
                    )


def resource_states(pipeline: dlt.Pipeline, names: list[str]) -> dict[str, ResourceState]:
    """The typed resource states of the pipeline's last committed load."""
    try:
        resources = pipeline.state.get("sources", {}).get("ciklek", {}).get("resources", {})
    except Exception:
        return {}
    return {n: ResourceState.load(resources.get(n, {})) for n in names}


class _Status:
    """`status.json`: what `ciklek status` shows while a run goes on and after it."""

    def __init__(self, options: SyncOptions, settings: Settings, report: RunReport) -> None:
        self.options, self.settings, self.report = options, settings, report
        self.started = dt.datetime.now(dt.UTC)
        previous = read_status(settings.state_dir, options.pipeline) or {}
        self.last_complete = previous.get("last_complete_sync")  # for `status --max-age`

    def write(self, pipeline: dlt.Pipeline, *, running: bool, last_run: Row | None = None) -> None:
        states = resource_states(pipeline, list(self.settings.catalogue))
        if last_run is None:  # while running (or after a crash): keep showing the previous run
            previous = read_status(self.settings.state_dir, self.options.pipeline) or {}
            last_run = previous.get("last_run")
        doc = {
            "pipeline": self.options.pipeline,
            "dataset": self.options.dataset,
            "key_fingerprint": self.settings.api_key.fingerprint if self.settings.api_key else None,
            "daily_request_budget": self.settings.daily_request_budget,
            "running": running,
            "run_started_at": iso(self.started),
            "updated_at": iso(dt.datetime.now(dt.UTC)),
            "resources": {name: self._resource(name, st) for name, st in states.items()},
            "last_run": last_run,
            "last_complete_sync": self._last_complete(last_run),
        }
        write_status(self.settings.state_dir, self.options.pipeline, doc)

    def _last_complete(self, last_run: Row | None) -> object:
        from connector.freshness import complete_entry

        if last_run is not None:
            self.last_complete = complete_entry(last_run) or self.last_complete
        return self.last_complete

    def _resource(self, name: str, st: ResourceState) -> Row:
        trav, outcome = st.traversal, self.report.outcomes.get(name)
        return {
            "watermark": st.watermark,
            "rows_loaded": st.rows_loaded,
            "traversal": None
            if trav is None
            else {
                **{k: getattr(trav, k) for k in ("kind", "since", "pages", "received", "total")},
                "ranges": [
                    {"since": r.since, "until": r.until, "pages": r.pages, "parked": r.parked}
                    for r in trav.ranges
                ],
            },
            "windows_in_progress": [
                {"since": w.since, "until": w.until, "pages": w.pages} for w in st.windows.values()
            ],
            "this_run_pages": outcome.pages if outcome else 0,
            **sweep_status(st),
        }


def run_sync(options: SyncOptions, *, settings: Settings | None = None) -> SyncResult:
    """Run one sync. Raises ConfigError (exit 2) or LockHeld (exit 75) before any request."""
    settings = settings or load_settings(
        resources=options.resources, page_size=options.page_size, pipeline=options.pipeline
    )
    settings.require_key()  # exit 2 before anything else when the key is missing
    window = check_options(options)
    destination = resolve_destination(options.destination, options.dataset, options.duckdb_file)
    started_at, started = dt.datetime.now(dt.UTC), time.monotonic()
    # dlt logs a failed load job with its traceback (`logger.exception`, level ERROR); our one
    # line per outcome says what happened, so without --debug only dlt's CRITICAL lines show.
    log_level = "INFO" if options.debug else "CRITICAL"
    with dlt_run_settings(log_level=log_level), run_lock(settings.state_dir, options.pipeline):
        pipeline = _prepared_pipeline(options, settings, destination)
        run_id = uuid.uuid4().hex
        parts = compose_sync(
            settings,
            _run_config(options, settings, window),
            pipeline=options.pipeline,
            max_requests=options.max_requests,
            progress=options.progress,
            events=EventLog(options.log_format, run_id),
        )
        with parts as run:
            report = run.source.report
            result = SyncResult(EXIT_OK, settings, report, run.log, run.quota, 0.0, run_id=run_id)
            describe_target(result, options)
            status = _Status(options, settings, report)
            status.write(pipeline, running=True)
            with stop_on_signals(report.stop_event), stop_on_fault(pipeline, result):
                _chunks(pipeline, run.source, options, result, status)
        result.elapsed = time.monotonic() - started
        _conclude(pipeline, run.source, options, result, status, started_at)
        return result


def _prepared_pipeline(
    options: SyncOptions, settings: Settings, destination: TDestinationReferenceArg
) -> dlt.Pipeline:
    """The run's dlt pipeline, checked before any request: destination credentials, the read
    copy, declared column types, the warehouse open (a locked or unreachable one costs no
    quota), and today's request count restored on a fresh runner."""
    pipeline = dlt.pipeline(
        pipeline_name=options.pipeline,
        destination=destination,
        dataset_name=options.dataset,
        pipelines_dir=str(settings.state_dir / "pipelines"),
    )
    # dlt's own handlers would swallow a SIGTERM during normalize/load (the run then goes
    # on, or fails with SignalReceivedException); ours finish the chunk and exit 75.
    pipeline.config.runtime.intercept_signals = False
    check_destination_config(pipeline)
    check_read_copy(pipeline, settings, options.dataset)
    check_column_types(
        pipeline, settings, set(settings.resources) if options.full_refresh else set()
    )
    check_before_requests(pipeline, settings)
    restore_ledger(  # a fresh runner: today's requests from `_ciklek_sync_runs`
        pipeline,
        options.pipeline,
        settings.state_dir / "ledger.json",
        settings.require_key().fingerprint,
    )
    return pipeline


def _run_config(options: SyncOptions, settings: Settings, window: Window | None) -> RunConfig:
    return RunConfig(
        page_size=settings.page_size,
        chunk_pages=settings.checkpoint_pages,
        chunk_seconds=settings.checkpoint_seconds,
        lookback_seconds=settings.lookback_seconds,
        window=window,
        full_refresh=options.full_refresh,
        tracker_dir=pipeline_dir(settings.state_dir, options.pipeline) / "traversals",
        rejects_inline=False,
        sweep=options.sweep,
        max_concurrency=settings.max_concurrency,
    )


def _conclude(
    pipeline: dlt.Pipeline,
    source: SourceRun,
    options: SyncOptions,
    result: SyncResult,
    status: _Status,
    started_at: dt.datetime,
) -> None:
    """After the chunks: the exit code, the run row, the read copy, the final status."""
    _decide(result, options)
    run_row = _run_row(result, options, started_at)
    if may_record_run(pipeline, result):
        _record_run(pipeline, source, run_row, result)
    publish_after_run(pipeline, result.settings, result, run_row)
    states = resource_states(pipeline, list(result.settings.resources))
    result.watermarks = {n: s.watermark for n, s in states.items()}
    status.write(pipeline, running=False, last_run={**run_row, **quota_facts(result)})


def _stop_texts(stops: list[TryLater]) -> list[str]:
    """Each stop once: a spent quota or budget once, however many resources walking at once
    ran into it (each on its own endpoint)."""
    texts: dict[object, str] = {}
    for stop in stops:
        key = type(stop) if isinstance(stop, QuotaExhausted | BudgetSpent) else str(stop)
        texts.setdefault(key, str(stop))
    return sorted(set(texts.values()))


def _record_run(pipeline: dlt.Pipeline, run: SourceRun, run_row: Row, result: SyncResult) -> None:
    """The `_ciklek_sync_runs` row, with the rejects a refresh held back."""
    run.report.run_rows = [run_row]
    try:
        with stop_on_signals(
            run.report.stop_event
        ):  # the outcome is decided: a signal changes nothing
            pipeline.run(
                ciklek_source(resources=[], run=run).with_resources(RUNS_TABLE, REJECTS_TABLE)
            )
    except Exception as exc:  # the data is in; failing to write the run row is secondary
        result.messages.append(f"could not write {RUNS_TABLE}: {type(exc).__name__}")


def _chunks(
    pipeline: dlt.Pipeline,
    run: SourceRun,
    options: SyncOptions,
    result: SyncResult,
    status: _Status,
) -> None:
    """One `pipeline.run` per chunk until every resource is finished or the run must stop."""
    pending = list(run.resources)
    _recover(pipeline)
    if options.sweep:  # a completed sweep kept from an earlier run: apply or refuse it first
        settle(pipeline, result.settings, run.report, pending, force=options.force)
        pending = [n for n in pending if not run.report.outcome(n).finished]
    # --full-refresh empties a resource once; a reload that stopped early is continued instead.
    states = resource_states(pipeline, pending) if options.full_refresh else {}
    reload = [
        n for n, st in states.items() if st.traversal is None or st.traversal.kind != "refresh"
    ]
    report = run.report
    while pending:
        names: list[str] = pending
        refresh: Literal["drop_resources"] | None = None
        if reload:
            names, refresh, reload = reload, "drop_resources", []
        source = ciklek_source(resources=names, run=run)
        if refresh is None:  # a refresh would drop the rejects table: carry them to the next load
            source = source.with_resources(*names, REJECTS_TABLE)
        if refresh is None:
            pipeline.run(source)
        else:
            pipeline.run(source, refresh=refresh)
            result.dropped += [t for n in names for t in run.catalogue[n].tables]
        result.quota.flush()  # `ciklek status` reads today's count while the run goes on
        status.write(pipeline, running=True)
        pending = [n for n in pending if not report.outcome(n).finished]
        fatal = [o for o in report.outcomes.values() if isinstance(o.error, Unauthorized)]
        if report.stops() or fatal:
            break
    if options.sweep:  # the sweeps this run completed, now that their last chunk is committed
        settle(pipeline, result.settings, report, list(run.resources), force=options.force)


def _recover(pipeline: dlt.Pipeline) -> None:
    """Deal with the packages a killed run left behind, before the first chunk."""
    if not pipeline.has_pending_data:
        return
    # Killed between dlt's "do not kill" rename and its delete: the package is normalized
    # and still extracted, and normalizing it again fails on every run. Finish the delete.
    extracted = _extracted_packages(pipeline)
    for load_id in set(pipeline.list_extracted_load_packages()).intersection(
        pipeline.list_normalized_load_packages()
    ):
        extracted.delete_package(load_id)
    # A killed run's last chunk. Loading it again could stage rows twice (dlt jobs are
    # at-least-once, and order_line_items has no primary key to deduplicate them): abort
    # it instead, which rewinds the state to before that chunk, so it is fetched again.
    # Except the first chunk of a --full-refresh: its tables may be emptied already, and
    # rewinding would leave them so; finish it and the next run continues the reload.
    if _refresh_pending(pipeline):
        pipeline.run()
    else:
        pipeline.abort_packages()


def _extracted_packages(pipeline: dlt.Pipeline) -> PackageStorage:
    """dlt's extracted-package storage. No public accessor exists (checked on dlt 1.31, which
    pyproject pins below 1.32); a crash-recovery path must not fail obscurely on an upgrade."""
    try:
        return pipeline._get_normalize_storage().extracted_packages
    except AttributeError as exc:  # pragma: no cover - only on an untested dlt version
        raise RuntimeError(
            f"dlt {dlt.__version__} changed its package storage; this connector is tested with "
            "dlt 1.31: reinstall with pip install -e . to get the pinned version"
        ) from exc


def _refresh_pending(pipeline: dlt.Pipeline) -> bool:
    """Does a pending package (extracted or normalized) drop tables, i.e. start a refresh?"""
    states = [pipeline.get_load_package_state(i) for i in pipeline.list_normalized_load_packages()]
    extracted = _extracted_packages(pipeline)
    states += [extracted.get_load_package_state(i) for i in pipeline.list_extracted_load_packages()]
    return any(state.get("dropped_tables") for state in states)


def _decide(result: SyncResult, options: SyncOptions) -> None:
    """Exit code by precedence 1 > 3 > 75 > 4 > 0, and the messages that explain it."""
    settings, report = result.settings, result.report
    codes: list[int] = []
    for name in settings.resources:
        outcome = report.outcome(name)
        error = outcome.error
        if isinstance(error, MissingScope) and not settings.resources_named:
            result.skipped[name] = (
                f"key lacks scope {error.scope or settings.catalogue[name].scope}"
            )
            continue
        if error is not None:
            code, message = _error_message(name, error)
            codes.append(code)
            result.messages.append(message)
        if outcome.stop is not None:
            codes.append(EXIT_TEMPFAIL)
            if isinstance(outcome.stop, QuotaExhausted | BudgetSpent) and outcome.stop.resume_at:
                result.resume_at = outcome.stop.resume_at
        if outcome.rejects and options.strict:
            codes.append(EXIT_STRICT)
        if outcome.sweep_refused is not None:
            codes.append(EXIT_SWEEP_REFUSED)
            result.messages.append(f"{name}: {outcome.sweep_refused}")
    for text in _stop_texts(report.stops()):
        result.messages.append(f"stopped early: {text}")
    if result.resume_at is not None:
        result.messages.append(f"resume after {stamp(result.resume_at)}")
    if EXIT_TEMPFAIL in codes and not any("progress is kept" in m for m in result.messages):
        result.messages.append("progress is kept: the next run continues where this one stopped")
    # the warehouse failed mid-run
    if (fault_code := destination_exit_code(result.error)) is not None:
        codes.append(fault_code)
    result.exit_code = next((c for c in EXIT_PRECEDENCE if c in codes), EXIT_OK)
    from connector.outcome import error_for

    result.error = error_for(result)


def _error_message(name: str, error: ApiError | ContractViolation) -> tuple[int, str]:
    if isinstance(error, Unauthorized):
        return EXIT_AUTH, (
            "the API key was refused (401 unauthorized): check SOURCES__CIKLEK__API_KEY or "
            "api_key under [sources.ciklek] in .dlt/secrets.toml"
        )
    if isinstance(error, MissingScope):
        return EXIT_AUTH, (
            f"{name}: the key lacks scope {error.scope} (403); add it in Portal -> Settings "
            "-> API Keys, or leave the resource out of --resources"
        )
    # A broken contract (a cursor that loops) reads like any unexpected answer from the API.
    return EXIT_BUG, (
        f"{name}: unexpected API error: {error} -- a bug or an API change: please "
        "report it (README, 'Reporting a bug') with the output of the command run "
        "with --debug"
    )


def run_kind(options: SyncOptions) -> str:
    """What kind of run this is, for the run log and the summary: sync, sweep, window, refresh."""
    if options.sweep:
        return "sweep"
    if options.full_refresh:
        return "refresh"
    if options.since or options.until:
        return "window"
    return "sync"


def _run_row(result: SyncResult, options: SyncOptions, started_at: dt.datetime) -> Row:
    outcomes = result.report.outcomes.values()
    outcome = {
        EXIT_OK: "completed",
        EXIT_STRICT: "completed_with_rejects",
        EXIT_TEMPFAIL: "stopped_try_later",
        EXIT_AUTH: "credentials_refused",
        EXIT_DESTINATION: "destination_needs_attention",
        EXIT_SWEEP_REFUSED: "sweep_refused",
        EXIT_BUG: "failed",
    }.get(result.exit_code, "failed")
    return {
        "run_id": result.run_id,
        "pipeline": options.pipeline,
        "kind": run_kind(options),
        "started_at": started_at,
        "ended_at": dt.datetime.now(dt.UTC),
        "outcome": outcome,
        "exit_code": result.exit_code,
        "resources": ",".join(result.settings.resources),
        "rows": sum(o.rows for o in outcomes),
        "line_item_rows": sum(o.child_rows for o in outcomes),
        "rejects": sum(o.rejects for o in outcomes),
        "requests": result.log.requests,
        "rate_limited": result.log.rate_limited,
        "waited_seconds": round(result.log.waited_seconds, 3),
        "message": scrub("; ".join(dict.fromkeys(result.messages))) or None,
        "rows_marked_deleted": sum(o.marked_deleted for o in outcomes),
    }
