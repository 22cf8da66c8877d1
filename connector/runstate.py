"""Per-pipeline files outside the warehouse: the run lock and the status file.

Why files: `ciklek status` must work with no network and while a sync runs, and DuckDB allows
one writer, so status cannot open the warehouse. The lock is an `flock`, which the kernel drops
when its process dies, so a `kill -9` never leaves a lock that blocks the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from connector.errors import LockHeld


def pipeline_dir(state_dir: Path, pipeline: str) -> Path:
    return state_dir / "runs" / pipeline


@contextlib.contextmanager
def run_lock(state_dir: Path, pipeline: str) -> Iterator[None]:
    """Hold the pipeline's lock for the duration of a run, or raise LockHeld at once."""
    path = pipeline_dir(state_dir, pipeline) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockHeld(
                f"another sync of pipeline {pipeline!r} is running ({holder}); "
                "this run changed nothing, try again when it ends"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def status_path(state_dir: Path, pipeline: str) -> Path:
    return pipeline_dir(state_dir, pipeline) / "status.json"


def write_status(state_dir: Path, pipeline: str, status: dict[str, Any]) -> None:
    """Atomically replace the status file (a reader never sees half a file)."""
    path = status_path(state_dir, pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_status(state_dir: Path, pipeline: str) -> dict[str, Any] | None:
    try:
        data = json.loads(status_path(state_dir, pipeline).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lock_is_held(state_dir: Path, pipeline: str) -> bool:
    """True when a live process holds the pipeline's lock (a run is in progress)."""
    path = pipeline_dir(state_dir, pipeline) / "lock"
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
