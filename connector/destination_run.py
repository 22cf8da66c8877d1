"""The warehouse side of one sync run: check it first, stop cleanly when it fails, publish the copy.

Why a module of its own: `run_sync` already decides the API side; these are the few places where
the warehouse can end a run, and each needs the same three things: a name for the destination
that carries no secret, the classification of `destination_faults`, and a message that says what
to do. `run_sync` calls in at four points (see each function), so the sync loop stays readable.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Protocol

import dlt

from connector.destination_check import open_destination, publish_read_copy
from connector.destination_faults import (
    DestinationCredentialsRefused,
    DestinationFault,
    DestinationNeedsPerson,
    DestinationUnavailable,
    as_error,
    classify,
)
from connector.destinations import check_duckdb_collision
from connector.errors import (
    EXIT_AUTH,
    EXIT_DESTINATION,
    EXIT_PRECEDENCE,
    EXIT_TEMPFAIL,
    CiklekError,
    ConfigError,
)
from connector.settings import Settings, register_secret, scrub

_log = logging.getLogger(__name__)


class _Result(Protocol):
    """What this module reads and writes of a `SyncResult` (no import cycle with sync)."""

    exit_code: int
    error: CiklekError | None
    messages: list[str]


def duckdb_database(pipeline: dlt.Pipeline) -> Path | None:
    """The DuckDB file the pipeline loads into; None for any other destination (or in memory)."""
    if pipeline.destination.destination_name != "duckdb":
        return None
    database = getattr(pipeline.destination_client().config.credentials, "database", None)
    if not isinstance(database, str) or database in ("", ":memory:") or database.startswith("md:"):
        return None
    return Path(database).absolute()


def destination_label(pipeline: dlt.Pipeline) -> str:
    """`duckdb /srv/w.duckdb` or `postgres db.example:5432/analytics`: where, never a password."""
    name = pipeline.destination.destination_name
    database = duckdb_database(pipeline)
    if database is not None:
        return f"{name} {database}"
    credentials = pipeline.destination_client().config.credentials
    host, port = getattr(credentials, "host", None), getattr(credentials, "port", None)
    db = getattr(credentials, "database", None)
    if isinstance(host, str) and host:
        return f"{name} {host}{f':{port}' if port else ''}/{db or ''}".rstrip("/")
    return name


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
    password = getattr(pipeline.destination_client().config.credentials, "password", None)
    register_secret(password if isinstance(password, str) else None)
    label = destination_label(pipeline)
    open_destination(
        pipeline,
        label,
        wait_seconds=settings.destination_lock_wait_seconds,
        on_wait=WaitLines(label, settings.progress_interval_seconds),
    )


def destination_exit_code(error: CiklekError | None) -> int | None:
    """The exit code of a destination error; None for anything else."""
    if isinstance(error, DestinationCredentialsRefused):
        return EXIT_AUTH
    if isinstance(error, DestinationNeedsPerson):
        return EXIT_DESTINATION
    if isinstance(error, DestinationUnavailable):
        return EXIT_TEMPFAIL
    return None


KEPT = "up to the last committed chunk (the next run fetches the chunk that failed again)"


@contextlib.contextmanager
def stop_on_fault(pipeline: dlt.Pipeline, result: _Result) -> Iterator[None]:
    """Around the chunk loop: a warehouse failure ends the run cleanly, anything else propagates.

    A recognised fault becomes `result.error` and one message (destination, cause, what to do);
    the chunks committed before it stay committed, and `_decide` turns the error into 75/3/7.
    """
    try:
        yield
    except Exception as exc:
        fault = classify(exc)
        if fault is None:
            raise
        _log.debug("the warehouse failed", exc_info=True)  # the traceback, with --debug only
        error = as_error(fault, destination_label(pipeline))
        result.error = error
        text = str(error)
        kept = f" {KEPT}" if "progress is kept" in text else f"; progress is kept {KEPT}"
        result.messages.append(text + kept)


def may_record_run(pipeline: dlt.Pipeline, result: _Result) -> bool:
    """Whether the run row can be loaded now (run_sync asks before `_record_run`).

    After a warehouse failure the failed chunk is still pending, and `pipeline.run` would load
    it before anything else: that chunk must be discarded by the next run's recovery instead
    (loading it again could stage rows twice). `ciklek status` still shows this run.
    """
    if destination_exit_code(result.error) is None or not pipeline.has_pending_data:
        return True
    result.messages.append(
        "this run is not in _ciklek_sync_runs (the warehouse failed); `ciklek status` shows it"
    )
    return False


def publish_after_run(
    pipeline: dlt.Pipeline, settings: Settings, result: _Result, run_row: Mapping[str, object]
) -> None:
    """Publish the analysts' read copy after a run that loaded rows (or when it is missing).

    A copy that cannot be published leaves the loaded data alone: one message, and the run's
    exit code becomes the failure's (75 or 7) when that outranks it.
    """
    copy, database = settings.duckdb_read_copy, duckdb_database(pipeline)
    if copy is None or database is None or destination_exit_code(result.error) is not None:
        return
    rows = sum(n for k in ("rows", "line_item_rows") if isinstance(n := run_row.get(k), int))
    if rows == 0 and copy.exists():
        return
    try:
        publish_read_copy(database, copy)
    except Exception as exc:
        fault = classify(exc)
        if fault is not None:
            error = as_error(fault, f"{destination_label(pipeline)} (read copy {copy})")
        elif isinstance(exc, OSError):  # a copy path that cannot be written: a person must act
            error = DestinationNeedsPerson(
                f"read copy {copy}: cannot be written ({exc.strerror or exc}); fix the path or "
                "unset duckdb_read_copy"
            )
        else:
            raise
        result.messages.append(f"read copy not published: {error}")
        code = destination_exit_code(error)
        if code is not None and EXIT_PRECEDENCE.index(code) < EXIT_PRECEDENCE.index(
            result.exit_code
        ):
            result.exit_code, result.error = code, error
        return
    result.messages.append(f"read copy published: {copy} (analysts: open it, not {database.name})")
