"""The run's DuckDB database, kept open from the check before the first request to the run's end.

Why: every dlt step (syncing state, each chunk's load, the run row) and each of our own writes
opens the DuckDB file and closes it again, and opening a file reads its catalog back: about
20 ms of CPU each, seven or more times a sync. While one connection of this process holds the
database, DuckDB hands every further connection in the process the database already open, so
those opens cost almost nothing (bench/RESULTS.md section 7). It also means no other process
can take the file's lock between two chunks of a run: an analyst's session opened mid-sync is
refused by DuckDB at once instead of failing the sync's next load.

What stays as it was: each load commits on its own (DuckDB flushes its write-ahead log at every
commit, so a kill loses nothing committed), and after each chunk the log is checkpointed into
the file (`checkpoint`), as closing the file did before: the file alone holds every committed
chunk, and a disk that fills up fails the chunk that filled it, not a later one.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import dlt

from connector.warehouse.checks import (
    destination_credentials,
    destination_label,
    duckdb_database,
)
from connector.warehouse.faults import as_error, classify

# The connection each pipeline object holds while its run is in `held_open`.
_HELD: weakref.WeakKeyDictionary[dlt.Pipeline, Any] = weakref.WeakKeyDictionary()


@contextmanager
def held_open(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Hold the pipeline's DuckDB file open for the `with` block.

    Other destinations (and DuckDB in memory or on MotherDuck) are left as they are: their
    connections are not a file to reopen.
    """
    pool: Any = getattr(destination_credentials(pipeline), "conn_pool", None)
    if duckdb_database(pipeline) is None or pool is None:
        yield
        return
    try:
        conn = pool.borrow_conn()  # dlt's own path: the same connect settings as its loads
    except Exception as exc:  # taken in the instant since the check: said like the check says it
        fault = classify(exc)
        if fault is None:
            raise
        raise as_error(fault, destination_label(pipeline)) from exc
    _HELD[pipeline] = conn
    try:
        yield
    finally:
        del _HELD[pipeline]
        _release(pool, conn)


def checkpoint(pipeline: dlt.Pipeline) -> None:
    """Write what the last load committed into the file itself (a no-op unless held open)."""
    conn = _HELD.get(pipeline)
    if conn is not None:
        conn.execute("CHECKPOINT")


def _release(pool: Any, conn: Any) -> None:
    """Give the connection back; the database closes (and checkpoints) with the last one.

    A checkpoint that fails here loses nothing: every committed load is in the write-ahead
    log, which DuckDB replays when the file is next opened.
    """
    with suppress(Exception):  # see the docstring: the log keeps what was committed
        pool.return_conn(conn)
