"""The pipeline's lock: one run at a time per pipeline, and the pipeline's private directory.

Why an `flock`: the kernel drops it when its process dies, so a `kill -9` never leaves a lock
that blocks the next run, and a second run exits 75 at once, touching nothing. It lives in the
private state dir (`connector/config/statedir.py`): owner-only, and the pipeline name is checked
before it becomes a path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from connector.config.statedir import check_dir, check_pipeline_name, open_private, private_dir
from connector.errors import LockHeld


def pipeline_dir(state_dir: Path, pipeline: str) -> Path:
    """The pipeline's directory (not created); ConfigError when the name is not a safe name."""
    return state_dir / "runs" / check_pipeline_name(pipeline)


def make_pipeline_dir(state_dir: Path, pipeline: str) -> Path:
    """Create (0700, each level) or check the state dir, `runs/` and the pipeline's directory."""
    path = pipeline_dir(state_dir, pipeline)
    private_dir(state_dir)
    private_dir(path.parent, ours=True)
    return private_dir(path, ours=True)


@contextlib.contextmanager
def run_lock(state_dir: Path, pipeline: str) -> Iterator[None]:
    """Hold the pipeline's lock for the duration of a run, or raise LockHeld at once."""
    path = make_pipeline_dir(state_dir, pipeline) / "lock"
    handle: IO[str] = os.fdopen(open_private(path), "r+")
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


def lock_is_held(state_dir: Path, pipeline: str) -> bool:
    """True when a live process holds the pipeline's lock (a run is in progress)."""
    path = pipeline_dir(state_dir, pipeline) / "lock"
    if not check_dir(state_dir):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
