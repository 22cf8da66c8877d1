"""The analysts' read copy of the DuckDB file: published after each run that loaded rows.

Why a copy: DuckDB allows one writer, and a session open on the file, even read-only, blocks a
sync (and a sync blocks the session). A copy written beside the target and renamed into place is
always a complete, consistent database that analysts may hold open as long as they like.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import dlt
import duckdb

from connector.config.settings import Settings
from connector.errors import EXIT_PRECEDENCE, DestinationNeedsPerson
from connector.warehouse.checks import destination_label, duckdb_database
from connector.warehouse.faults import RunOutcome, as_error, classify, destination_exit_code


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


def publish_after_run(
    pipeline: dlt.Pipeline, settings: Settings, result: RunOutcome, run_row: Mapping[str, object]
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
