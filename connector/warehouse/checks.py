"""The warehouse checked before the first Ciklek request: its configuration, our column types,
the read copy setting, and the warehouse itself, opened.

Why first: a locked DuckDB file or an unreachable PostgreSQL found after fifty requests has cost
fifty requests of the daily quota for nothing. Opening the destination's SQL client takes
DuckDB's file lock and makes PostgreSQL's connection, which is exactly what the load will need.
A DuckDB file held by another process (an analyst's notebook, a `duckdb -readonly` shell) is
waited for, since such holders come and go; anything else is reported at once, with one line
that names the destination (never a password) and says what to do.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException

from connector.catalogue import FieldSpec
from connector.config.redaction import register_secret, scrub
from connector.config.settings import Settings
from connector.errors import ConfigError
from connector.records.history import versions_table
from connector.warehouse.destinations import check_duckdb_collision
from connector.warehouse.faults import DestinationFault, as_error, classify
from connector.warehouse.reload import can_swap

WAIT_STEP_SECONDS = 1.0


class _SqlClient(Protocol):
    def execute_sql(self, sql: str) -> object: ...


class _OpenClient(Protocol):
    """dlt's SqlClientBase as a context manager (its `__exit__` takes no Optional types)."""

    def __enter__(self) -> _SqlClient: ...

    def __exit__(
        self, exc_type: type[BaseException], exc_val: BaseException, exc_tb: TracebackType
    ) -> None: ...


class _Pipeline(Protocol):
    def sql_client(self) -> _OpenClient: ...


def probe(pipeline: _Pipeline) -> None:
    """One round trip through the destination's own client (the load opens it the same way)."""
    with pipeline.sql_client() as client:
        client.execute_sql("SELECT 1")


def open_destination(
    pipeline: _Pipeline,
    destination: str,
    *,
    wait_seconds: float,
    on_wait: Callable[[DestinationFault, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return when the destination opened; raise the classified error otherwise.

    A lock held by another process is retried every second for `wait_seconds` (each wait
    reported through `on_wait` with the seconds left), then raised as "try again later".
    """
    deadline = clock() + wait_seconds
    while True:
        try:
            probe(pipeline)
            return
        except Exception as exc:
            fault = classify(exc)
            if fault is None:
                raise
            left = deadline - clock()
            if not fault.locked or left <= 0:
                raise as_error(fault, destination) from exc
            if on_wait is not None:
                on_wait(fault, left)
            sleep(min(WAIT_STEP_SECONDS, left))


# Each pipeline object's resolved credentials (a pipeline object lives for one run).
_CREDENTIALS: weakref.WeakKeyDictionary[dlt.Pipeline, object] = weakref.WeakKeyDictionary()


def destination_credentials(pipeline: dlt.Pipeline) -> object:
    """The destination's credentials, resolved once per pipeline object.

    Why: the checks before the first request, the label in every destination message and the
    read copy each need them, and every `destination_client()` resolves the destination's whole
    configuration from every provider again (~9 ms each; five of them in every sync). Settings
    are read once per run and the pipeline object lives for one run, so the first answer holds.
    A resolution that fails (credentials missing) is not kept: the caller reports it.
    """
    if pipeline not in _CREDENTIALS:
        _CREDENTIALS[pipeline] = pipeline.destination_client().config.credentials
    return _CREDENTIALS[pipeline]


def duckdb_database(pipeline: dlt.Pipeline) -> Path | None:
    """The DuckDB file the pipeline loads into; None for any other destination (or in memory)."""
    if pipeline.destination.destination_name != "duckdb":
        return None
    database = getattr(destination_credentials(pipeline), "database", None)
    if not isinstance(database, str) or database in ("", ":memory:") or database.startswith("md:"):
        return None
    return Path(database).absolute()


def destination_label(pipeline: dlt.Pipeline) -> str:
    """`duckdb /srv/w.duckdb` or `postgres db.example:5432/analytics`: where, never a password."""
    name = pipeline.destination.destination_name
    database = duckdb_database(pipeline)
    if database is not None:
        return f"{name} {database}"
    credentials = destination_credentials(pipeline)
    host, port = getattr(credentials, "host", None), getattr(credentials, "port", None)
    db = getattr(credentials, "database", None)
    if isinstance(host, str) and host:
        return f"{name} {host}{f':{port}' if port else ''}/{db or ''}".rstrip("/")
    return name


def check_destination_config(pipeline: dlt.Pipeline) -> None:
    """Resolve the destination's credentials now: dlt would only notice them missing after the
    first chunk was fetched, and report it as a crash rather than a configuration problem."""
    try:
        destination_credentials(pipeline)
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
        spec = settings.catalogue[name]
        pairs = [(spec.name, spec.fields)]
        if spec.child is not None:
            pairs.append((spec.child.table, spec.child.fields))
        for table, fields in pairs:
            if name not in refreshing:
                _money_columns(
                    tables,
                    table,
                    fields,
                    f"reload it once with `ciklek sync --resources {name} --full-refresh`",
                )
            # A full refresh keeps the history: its table is fixed by hand, or started again.
            kept = versions_table(table)
            _money_columns(
                tables,
                kept,
                fields,
                f"a full refresh keeps history: convert the "
                f"column to DECIMAL(38,2), or drop {kept} to start its history again",
            )


def _money_columns(
    tables: Mapping[str, Any], table: str, fields: Sequence[FieldSpec], fix: str
) -> None:
    columns = tables.get(table, {}).get("columns", {})
    for f in fields:
        if f.kind != "money" or f.name not in columns:
            continue
        existing = columns[f.name].get("data_type")
        if existing not in (None, "decimal"):
            raise ConfigError(
                f"{table}.{f.name} is declared as money but was loaded as {existing}; {fix}"
            )


def check_read_copy(pipeline: dlt.Pipeline, settings: Settings, dataset: str) -> None:
    """`duckdb_read_copy` makes sense only beside a DuckDB file, and never as that file (exit 2).

    Called before the destination is opened, so a wrong setting costs nothing. The copy's stem
    must not be the dataset's name either: analysts would meet the ambiguity `ciklek sync`
    refuses for the main file.
    """
    copy = settings.duckdb_read_copy
    if copy is None:
        return
    database = duckdb_database(pipeline)
    if database is None:
        raise ConfigError(
            f"duckdb_read_copy is set ({copy}) but the destination is "
            f"{pipeline.destination.destination_name!r}: the read copy is a copy of a local "
            "DuckDB file; unset SOURCES__CIKLEK__DUCKDB_READ_COPY or sync into DuckDB"
        )
    if copy.resolve() == database.resolve():
        raise ConfigError(
            f"duckdb_read_copy ({copy}) is the DuckDB file the sync writes; choose another path, "
            f"e.g. {database.with_name(database.stem + '_read' + database.suffix)}"
        )
    check_duckdb_collision(copy, dataset)


class WaitLines:
    """The progress lines of a wait for a DuckDB file another process holds.

    One line when the wait begins, then one every `interval` seconds or whenever the holder
    changes: a cron log shows who held the file without a line per second.
    """

    def __init__(self, label: str, interval: float, stream: IO[str] | None = None) -> None:
        self.label, self.interval = label, interval
        self.stream = stream or sys.stderr
        self.last: tuple[float, str | None] | None = None

    def __call__(self, fault: DestinationFault, left: float) -> None:
        now = time.monotonic()
        if self.last is not None and (
            self.last[1] == fault.lock_holder and now - self.last[0] < self.interval
        ):
            return
        self.last = (now, fault.lock_holder)
        holder = fault.lock_holder or "another process"
        print(
            scrub(
                f"ciklek: destination {self.label}: the DuckDB file is held by {holder}; "
                f"waiting up to {left:.0f}s more (destination_lock_wait_seconds) before any "
                "request is sent"
            ),
            file=self.stream,
            flush=True,
        )


def check_before_requests(pipeline: dlt.Pipeline, settings: Settings) -> None:
    """Open the warehouse before the first Ciklek request (run_sync, right after the pipeline).

    Raises DestinationUnavailable (75), DestinationCredentialsRefused (3) or
    DestinationNeedsPerson (7); a DuckDB file another process holds is waited for first.
    """
    # The warehouse password is never printed, whatever a driver's message happens to contain.
    password = getattr(destination_credentials(pipeline), "password", None)
    register_secret(password if isinstance(password, str) else None)
    label = destination_label(pipeline)
    open_destination(
        pipeline,
        label,
        wait_seconds=settings.destination_lock_wait_seconds,
        on_wait=WaitLines(label, settings.progress_interval_seconds),
    )


def check_reload(pipeline: dlt.Pipeline, *, full_refresh: bool, drop_first: bool) -> None:
    """A reload is built beside the live tables and swapped in; where the destination has no
    transactional swap, only `--drop-first` (empty first, reload in place) is possible, and the
    user must ask for it: said before any request (exit 2)."""
    name = pipeline.destination.destination_name
    if full_refresh and not drop_first and not can_swap(name):
        raise ConfigError(
            f"--full-refresh on destination {name!r}: no safe swap there (a reload is built "
            "beside the live tables and swapped in, in one transaction, on duckdb and "
            "postgres); add --drop-first to empty the tables first and reload them in place "
            "(queries then see partial tables until the reload completes)"
        )
