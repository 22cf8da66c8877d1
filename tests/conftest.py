"""Shared fixtures: a clean environment per test, real sandboxes, and the `ciklek` CLI.

Every test runs in its own working directory with its own CIKLEK_HOME and no inherited
Ciklek/dlt settings, so nothing leaks between tests or from the developer's machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_proc import SandboxProcess

CIKLEK_BIN = str(Path(sys.executable).parent / "ciklek")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith(("SOURCES__", "DESTINATION__", "CIKLEK_HOME", "PIPELINES__")):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "ciklek-home"
    monkeypatch.setenv("CIKLEK_HOME", str(home))
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxProcess]]:
    """Start sandboxes with any flags; all are stopped at the end of the test."""
    started: list[SandboxProcess] = []

    def start(*flags: Any) -> SandboxProcess:
        sb = SandboxProcess(*[str(f) for f in flags]).start()
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., SandboxProcess]) -> SandboxProcess:
    """A small default sandbox: 300 orders, 120 customers, 50 products."""
    return sandbox_factory("--orders", 300, "--customers", 120, "--products", 50)


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


def query(path: Path | str, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(sql).fetchall()


DEFAULT_DB = "ciklek_warehouse.duckdb"
