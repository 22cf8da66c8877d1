"""Shared fixtures: a clean environment per test, real sandboxes, and the `ciklek` CLI.

Every test runs in its own working directory with its own CIKLEK_HOME and no inherited
Ciklek/dlt settings, so nothing leaks between tests or from the developer's machine.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import pg_dsn
from tests.sandbox_proc import SandboxProcess


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test module is imported: what lives as long as this worker (modules, classes, the
    registries of dlt and dagster) leaves the cycle collector's sight, and young collections run
    every 20,000 allocations instead of every 700.

    Why: an in-process sync spent ~7 % of its CPU in the collector, most of it walking those
    long-lived objects again on every full collection; ~2 % after `gc.freeze()`. Only this
    test process is tuned; `ciklek` processes keep Python's defaults.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


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


@pytest.fixture(autouse=True)
def fresh_limiters() -> Iterator[None]:
    """Each test starts with no rate limiter, as each `ciklek` process does.

    The limiters live for the process (one per API host and key, `connector.api.limiter`), and
    a test calling `run_sync` or the source directly would otherwise meet the window an earlier
    test's sandbox left (a port comes back for a later sandbox in this worker). In-process
    `ciklek` runs (tests/inproc.py) start with none on each call, as a process does.
    """
    from connector.api import limiter

    limiter._REGISTRY.clear()
    yield
    limiter._REGISTRY.clear()


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


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A DSN and a PostgreSQL schema of this test's own, dropped afterwards."""
    import uuid

    import psycopg2

    dsn = pg_dsn()
    schema = f"ciklek_t_{uuid.uuid4().hex[:10]}"
    yield dsn, schema
    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}_staging" CASCADE')
