"""The one composition root: settings, client, limiter, ledger, progress and the run around them.

Every way in builds its parts here: `ciklek sync` (through `run_sync`), `plan` and `check`, the
cron script, Dagster and a bare `ciklek_source()`. So the limits, the limiter shared per key and
the quota ledger are the same whichever door a request comes through, and whoever opens a client
closes it when the run or the extract ends.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import dlt
from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.common.runtime import telemetry

from connector.api.client import CiklekClient, build_client
from connector.api.ledger import QuotaLedger, RequestLog, ledger_for, sweep_ledger
from connector.catalogue import ResourceSpec
from connector.config.settings import Settings, load_settings
from connector.records.undocumented import TableColumns
from connector.runs.bare import LoudSource
from connector.runs.events import EventLog
from connector.runs.progress import ProgressReporter
from connector.runs.request_ledger import WarehouseLedger, chunk_allowance
from connector.traversal.run_config import RunConfig
from connector.traversal.run_report import RunReport


class ClientLease:
    """Hands one client to the resources; an owned client is closed when none is using it.

    A bare `ciklek_source()` has no run around it to close its client: the resources borrow it
    for their traversal, and the last one to finish closes it (the next opens a new one).
    """

    def __init__(
        self,
        open_client: Callable[[], CiklekClient],
        *,
        release: Callable[[CiklekClient], None] | None = None,
    ) -> None:
        self._open, self._release = open_client, release
        self._client: CiklekClient | None = None
        self._users = 0
        self._lock = threading.Lock()

    @classmethod
    def borrowed(cls, client: CiklekClient) -> ClientLease:
        """A client someone else closes (the sync run)."""
        return cls(lambda: client)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[CiklekClient]:
        with self._lock:
            if self._client is None:
                self._client = self._open()
            self._users += 1
            client = self._client
        try:
            yield client
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._release is not None:
                    self._client = None
                    self._release(client)


@dataclass(frozen=True)
class SourceSetup:
    """Everything the dlt source needs: what to traverse, with which client, how, and where
    to report."""

    catalogue: Mapping[str, ResourceSpec]
    resources: Sequence[str]
    client: ClientLease
    config: RunConfig
    report: RunReport
    # A bare `ciklek_source()` raises fatal errors out of `pipeline.run` (see bare.py).
    loud: LoudSource | None = None


def bare_setup(resources: object = None) -> SourceSetup:
    """`ciklek_source()` called without a run: settings from dlt's providers, one traversal to
    the end per resource per load, counted in the quota ledger under the source's name."""
    settings = load_settings(resources=resources)
    quota = ledger_for(settings, "ciklek_source")

    def release(client: CiklekClient) -> None:
        client.close()
        quota.flush()

    return SourceSetup(
        catalogue=settings.catalogue,
        resources=list(settings.resources),
        client=ClientLease(lambda: build_client(settings, quota=quota), release=release),
        config=RunConfig(
            page_size=settings.page_size,
            lookback_seconds=settings.lookback_seconds,
            hash_key=settings.require_hash_key(),
            history=frozenset(settings.history),
        ),
        report=_report(settings, uuid.uuid4().hex),
        loud=LoudSource(named=settings.resources_named),
    )


def _report(
    settings: Settings, run_id: str, stop_event: threading.Event | None = None
) -> RunReport:
    """Where the resources report back: `schema_changes = "freeze"` freezes the columns;
    `stop_event`: the run's own (set by a signal, see runs/signals.py)."""
    report = RunReport(
        columns=TableColumns(frozen=settings.schema_changes == "freeze"), run_id=run_id
    )
    if stop_event is not None:
        report.stop_event = stop_event
    return report


@dataclass(frozen=True)
class SyncParts:
    """What one `ciklek sync` run is made of."""

    log: RequestLog
    quota: QuotaLedger
    progress: ProgressReporter
    source: SourceSetup
    client: CiklekClient
    ledger: WarehouseLedger | None = None  # the run's `_ciklek_request_ledger` row


@contextlib.contextmanager
def compose_sync(
    settings: Settings,
    config: RunConfig,
    *,
    pipeline: str,
    max_requests: int | None,
    progress: bool | None,
    events: EventLog | None = None,
    stop_event: threading.Event | None = None,
    run_id: str | None = None,
) -> Iterator[SyncParts]:
    """The parts of a sync run; on exit the progress display stops, the ledger reaches disk and
    the client is closed. `stop_event`: the run's (set by a signal, see runs/signals.py);
    `run_id`: the run records its requests ahead in the warehouse under it (request_ledger.py)."""
    log = RequestLog()
    quota = (sweep_ledger if config.sweep else ledger_for)(settings, pipeline, max_requests)
    report = _report(settings, run_id or "", stop_event)
    client = build_client(settings, quota=quota, log=log, stop_event=report.stop_event)
    reporter = ProgressReporter(
        list(settings.resources),
        page_size=settings.page_size,
        log=log,
        quota=quota,
        tty=progress,
        interval=settings.progress_interval_seconds,
        events=events,
    )
    report.on_page = reporter.on_page
    report.on_event = reporter.event
    client.on_event = reporter.event
    source = SourceSetup(
        settings.catalogue, list(settings.resources), ClientLease.borrowed(client), config, report
    )
    ledger = None
    if run_id is not None:
        allowance = chunk_allowance(config.chunk_pages or settings.checkpoint_pages)
        ledger = WarehouseLedger(run_id, pipeline, quota, allowance)
        report.ledger_row = ledger.next_row
    try:
        yield SyncParts(
            log=log, quota=quota, progress=reporter, source=source, client=client, ledger=ledger
        )
    finally:
        reporter.close()
        quota.flush()
        client.close()


@contextlib.contextmanager
def open_client(settings: Settings, pipeline: str) -> Iterator[CiklekClient]:
    """`plan` and `check` count their requests in the ledger and obey the budget like a sync."""
    quota = ledger_for(settings, pipeline)
    client = build_client(settings, quota=quota)
    client.on_event = EventLog().emit  # a line per retry: an unreachable host is not a hang
    try:
        yield client
    finally:
        client.close()
        quota.flush()


# dlt settings our run needs. Defaults apply only where the user set nothing (telemetry off:
# nothing here may reach the internet unasked; logs quiet: dlt warns about hint differences we
# make on purpose). The others are how a sync works: resources extracted one after the other, so
# `_ciklek_rejects` runs after the data ones; completed load packages (customer data in Parquet)
# deleted once loaded.
DLT_DEFAULTS: Mapping[str, object] = {"runtime.dlthub_telemetry": False}
DLT_RUN_SETTINGS: Mapping[str, object] = {
    "extract.next_item_mode": "fifo",
    "load.delete_completed_jobs": True,
}


class _SharedSettings:
    """dlt's config is one document per process: two runs at once in one process (Dagster's
    threads: a sweep beside a materialisation) must not each save and restore it, or the one
    that ends last restores the other's values for good. The first run in sets them, the last
    one out restores what the host had."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._applied: contextlib.ExitStack | None = None

    def enter(self, values: Mapping[str, object]) -> None:
        with self._lock:
            if self._users == 0:
                stack = contextlib.ExitStack()
                stack.enter_context(dlt.config.values(values))
                self._applied = stack
                _reload_dlt_runtime()
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._applied is not None:
                self._applied.close()
                self._applied = None
                _reload_dlt_runtime()


_SHARED = _SharedSettings()


@contextlib.contextmanager
def dlt_run_settings(*, log_level: str = "ERROR") -> Iterator[None]:
    """dlt's settings for the duration of our run, through dlt's config (never `os.environ`),
    restored afterwards: a host process (Dagster, a notebook) keeps its own. Runs at once in one
    process share the first one's settings (see `_SharedSettings`)."""
    defaults = {**DLT_DEFAULTS, "runtime.log_level": log_level}
    values = {k: v for k, v in defaults.items() if dlt.config.get(k) is None}
    values.update(DLT_RUN_SETTINGS)
    _SHARED.enter(values)
    try:
        yield
    finally:
        _SHARED.leave()


def _reload_dlt_runtime() -> None:
    """dlt resolves its logger and telemetry once, when its context is first used (often before
    our run: `load_settings` reads through it); resolve them again with the values now in force."""
    telemetry.stop_telemetry()
    Container()[PluggableRunContext].initialize_runtime()
