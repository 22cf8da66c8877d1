"""Helpers shared by tests: the installed `ciklek` CLI, the environment a user sets, queries."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from tests.sandbox_proc import SandboxProcess

CIKLEK_BIN = str(Path(sys.executable).parent / "ciklek")


def sync_env(sb: SandboxProcess, key: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for running the connector against a sandbox, as a user would set it."""
    env = dict(os.environ)
    env["SOURCES__CIKLEK__BASE_URL"] = sb.url
    env["SOURCES__CIKLEK__API_KEY"] = key or sb.key
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `ciklek` console script and capture its output."""
    return subprocess.run(
        [CIKLEK_BIN, *args],
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


_READER: duckdb.DuckDBPyConnection | None = None
_READER_LOCK = threading.Lock()


def query(path: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """`sql`'s rows from the DuckDB file at `path`, opened read-only for this query only.

    The file is attached to one in-memory database kept for the test process, under the name
    a connection to it would give its catalog (the file's stem), and detached after: each new
    DuckDB database costs ~20 ms of CPU to create, an attach ~2 ms, and tests query ~700 times.
    Like a read-only connection, the attach takes the file's shared lock only while it runs.
    """
    global _READER
    target = Path(path)
    alias = target.stem.replace('"', '""')
    with _READER_LOCK:
        if _READER is None:
            _READER = duckdb.connect(":memory:")
        con = _READER
        con.execute(
            f"ATTACH '{str(target).replace(chr(39), chr(39) * 2)}' AS \"{alias}\" (READ_ONLY)"
        )
        try:
            con.execute(f'USE "{alias}"')
            return con.sql(sql).fetchall()
        finally:
            con.execute("USE memory")
            con.execute(f'DETACH "{alias}"')


DEFAULT_DB = "ciklek_warehouse.duckdb"


def pg_dsn() -> str:
    """The test PostgreSQL DSN from `make test` (scripts/postgres.sh): fails in CI, else skips."""
    import pytest

    dsn = os.environ.get("CIKLEK_TEST_PG_DSN", "").strip()
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CIKLEK_TEST_PG_DSN is empty in CI: scripts/postgres.sh did not start")
        pytest.skip("CIKLEK_TEST_PG_DSN not set (run `make test`, or scripts/postgres.sh start)")
    return dsn


@contextlib.contextmanager
def tmpfs(parent: Path, size: str) -> Iterator[Path]:
    """A small tmpfs that a DuckDB file fills for real (mounting needs root, as in CI)."""
    import pytest

    if os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; mounting a tmpfs must work there")
        pytest.skip("mounting a tmpfs needs root")
    mnt = parent / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def scratch_pipeline(destination: object, tmp_path: Path) -> Any:
    """A dlt pipeline of its own (a fresh name, dataset `d`) with its state under `tmp_path`."""
    import uuid

    import dlt

    return dlt.pipeline(
        pipeline_name=f"p{uuid.uuid4().hex[:8]}",
        destination=destination,  # type: ignore[arg-type]
        dataset_name="d",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
