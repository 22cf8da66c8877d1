"""A plain `pipeline.run(ciklek_source())` fails loudly on what a person must fix, and keeps the
pages it paid for on a quota stop (one warning, no exception), against the real sandbox."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dlt
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from connector import (
    CiklekUnavailable,
    ContractViolation,
    MissingScope,
    Unauthorized,
    ciklek_source,
)
from connector.api.limiter import _REGISTRY
from tests.helpers import query
from tests.hostile_server import HostileServer, json_answer
from tests.sandbox_proc import REPO_ROOT, SandboxProcess
from tests.syncutil import wait_for

FULL, READER = "bsk_test_full_bare", "bsk_test_reader_bare"


@pytest.fixture
def sb(sandbox_factory: Callable[..., SandboxProcess]) -> SandboxProcess:
    return sandbox_factory(
        "--orders", 120, "--customers", 20, "--products", 10,
        "--key", f"{FULL}=orders:read,customers:read,products:read",
        "--key", f"{READER}=orders:read",
    )  # fmt: skip


def _pipeline(tmp_path: Path) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name="bare",
        destination=dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb")),
        dataset_name="bare",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def _env(monkeypatch: pytest.MonkeyPatch, url: str, key: str, **extra: str) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__BASE_URL", url)
    monkeypatch.setenv("SOURCES__CIKLEK__API_KEY", key)
    monkeypatch.setenv("SOURCES__CIKLEK__PAGE_SIZE", "40")
    for name, value in extra.items():
        monkeypatch.setenv(f"SOURCES__CIKLEK__{name.upper()}", value)
    _REGISTRY.clear()  # the process-wide limiter remembers a daily 429 of an earlier test


def _cause(info: pytest.ExceptionInfo[PipelineStepFailed]) -> BaseException | None:
    return info.value.exception.__cause__


def test_refused_key_raises_out_of_pipeline_run(
    sb: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, sb.url, "bsk_test_revoked_key_123")
    with pytest.raises(PipelineStepFailed) as info:
        _pipeline(tmp_path).run(ciklek_source())
    assert isinstance(_cause(info), Unauthorized)
    assert "bsk_test_revoked_key_123" not in str(info.value)


def test_named_403_raises_and_unnamed_403_is_skipped(
    sb: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, sb.url, READER)
    with pytest.raises(PipelineStepFailed) as info:
        _pipeline(tmp_path).run(ciklek_source(resources=["orders", "customers"]))
    cause = _cause(info)
    assert isinstance(cause, MissingScope) and cause.resource == "customers"

    # Named through the setting: the same.
    monkeypatch.setenv("SOURCES__CIKLEK__RESOURCES", "customers")
    with pytest.raises(PipelineStepFailed) as info:
        _pipeline(tmp_path).run(ciklek_source())
    assert isinstance(_cause(info), MissingScope)

    # Not named: the resource the key cannot read is skipped, the others load.
    monkeypatch.delenv("SOURCES__CIKLEK__RESOURCES")
    _pipeline(tmp_path).run(ciklek_source())
    assert query(tmp_path / "warehouse.duckdb", "select count(*) from bare.orders") == [(120,)]


def test_daily_quota_stop_loads_pages_warns_once_and_does_not_raise(
    sb: SandboxProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One resource after the other: the 2 requests go to orders (the order is what is pinned).
    _env(monkeypatch, sb.url, FULL, max_concurrency="1")
    sb.control_post("limits", json={"daily_quota": 2})  # 2 of the 3 order pages
    with caplog.at_level(logging.WARNING, logger="connector"):
        info = _pipeline(tmp_path).run(ciklek_source())
    assert not info.has_failed_jobs
    db = tmp_path / "warehouse.duckdb"
    assert query(db, "select count(*) from bare.orders") == [(80,)]
    warnings = [r for r in caplog.records if "stopped early" in r.getMessage()]
    assert len(warnings) == 1 and "resume after" in warnings[0].getMessage()

    # The state moved: after the new day the next run fetches only the rest.
    sb.control_post("new_day")
    sb.control_post("limits", json={"daily_quota": 1000})
    _REGISTRY.clear()
    _pipeline(tmp_path).run(ciklek_source())
    assert query(db, "select count(*), count(distinct id) from bare.orders") == [(120, 120)]


def test_api_unavailable_after_retries_raises(
    sb: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, sb.url, FULL, max_attempts="2", max_wait_seconds="0.2")
    sb.control_post("faults", json={"error_rate": 1.0})
    with pytest.raises(PipelineStepFailed) as info:
        _pipeline(tmp_path).run(ciklek_source(resources=["products"]))
    assert isinstance(_cause(info), CiklekUnavailable)


def test_broken_contract_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HostileServer(lambda _seen: json_answer({"data": {"not": "a list"}})) as api:
        _env(monkeypatch, api.base_url, "bsk_test_contract")
        with pytest.raises(PipelineStepFailed) as info:
            _pipeline(tmp_path).run(ciklek_source(resources=["products"]))
    assert isinstance(_cause(info), ContractViolation)


BARE_SCRIPT = """
import logging, sys
import dlt
from connector import ciklek_source
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
pipeline = dlt.pipeline(
    pipeline_name="bare_signal",
    destination=dlt.destinations.duckdb(sys.argv[1]),
    dataset_name="bare",
    pipelines_dir=sys.argv[2],
)
pipeline.run(ciklek_source(resources=["orders"]))
print("RETURNED", flush=True)
"""


def test_sigterm_ends_the_extract_cleanly_and_keeps_the_pages(
    sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_factory("--orders", 120, "--latency-ms", 150)
    env = {
        **os.environ,
        "SOURCES__CIKLEK__BASE_URL": sb.url,
        "SOURCES__CIKLEK__API_KEY": sb.key,
        "SOURCES__CIKLEK__PAGE_SIZE": "10",
        "PYTHONPATH": str(REPO_ROOT),
    }
    db = tmp_path / "warehouse.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SCRIPT, str(db), str(tmp_path / "p")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: sb.stats()["requests"] >= 3, what="a few pages fetched")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "RETURNED" in out
    # One warning line says it (dlt's log lines around it carry timestamps: lines, not counts).
    (stop,) = [line for line in err.splitlines() if "stopped early" in line]
    assert stop.endswith(
        "ciklek: stopped early (stopped by signal); the pages fetched so far load "
        "and the state moves; run again to continue"
    ), stop
    loaded = query(db, "select count(*), count(distinct id) from bare.orders")[0]
    assert 30 <= loaded[0] < 120 and loaded[0] == loaded[1]
