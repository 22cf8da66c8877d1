"""Open the warehouse before the first Ciklek request, and publish the analysts' read copy.

Why first: a locked DuckDB file or an unreachable PostgreSQL found after fifty requests has cost
fifty requests of the daily quota for nothing. Opening the destination's SQL client takes
DuckDB's file lock and makes PostgreSQL's connection, which is exactly what the load will need.
A DuckDB file held by another process (an analyst's notebook, a `duckdb -readonly` shell) is
waited for, since such holders come and go; anything else is reported at once.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol

import duckdb

from connector.destination_faults import DestinationFault, as_error, classify

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


def publish_read_copy(database: Path, copy: Path) -> None:
    """Copy the DuckDB file to `copy` atomically: written beside it, then renamed over it.

    The copy is taken while a connection holds the file (so no other process can write to it)
    and right after a CHECKPOINT (so the file alone holds every committed row, nothing in the
    WAL). A reader holding the old copy keeps its consistent view (the rename leaves its inode
    alone) and sees the new data when it reopens the path.
    """
    copy.parent.mkdir(parents=True, exist_ok=True)
    partial = copy.with_name(f".{copy.name}.{os.getpid()}.partial")
    try:
        with duckdb.connect(str(database)) as con:
            con.execute("CHECKPOINT")
            shutil.copyfile(database, partial)
        os.replace(partial, copy)
    except BaseException:
        partial.unlink(missing_ok=True)  # a half-written copy must not pile up beside the real one
        raise
