"""What one `run_sync` leaves behind in the process and on disk (against the real sandbox)."""

from __future__ import annotations

import os
from pathlib import Path

import dlt
import pytest
from dlt.common.runtime import anon_tracker

import connector.runs.sync
from connector.runs.compose import dlt_run_settings
from connector.runs.options import SyncOptions
from connector.runs.sync import run_sync
from tests.sandbox_proc import SandboxProcess
from tests.syncutil import SANDBOX_FLAGS, fast_env, set_env


@pytest.fixture
def sb(sandbox_factory, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxProcess:
    sandbox: SandboxProcess = sandbox_factory(*SANDBOX_FLAGS)
    env = fast_env(sandbox)
    for name in ("RUNTIME__DLTHUB_TELEMETRY", "RUNTIME__LOG_LEVEL"):
        env.pop(name, None)  # the run's own defaults must apply
    monkeypatch.delenv("RUNTIME__DLTHUB_TELEMETRY", raising=False)
    monkeypatch.delenv("RUNTIME__LOG_LEVEL", raising=False)
    set_env(monkeypatch, env)
    return sandbox


def test_a_run_applies_dlt_defaults_without_touching_the_environment(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    chunks = connector.runs.sync._chunks

    def spy(*args: object, **kwargs: object) -> None:
        seen["log_level"] = dlt.config.get("runtime.log_level")
        seen["telemetry"] = anon_tracker._ANON_TRACKER_ENDPOINT is not None
        chunks(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(connector.runs.sync, "_chunks", spy)
    before = dict(os.environ)
    result = run_sync(SyncOptions(resources=["customers"], progress=False))
    assert result.exit_code == 0
    assert dict(os.environ) == before
    assert seen == {"log_level": "CRITICAL", "telemetry": False}
    assert dlt.config.get("runtime.log_level") is None  # the host process gets its own back


def test_a_level_the_user_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "WARNING")
    monkeypatch.delenv("RUNTIME__DLTHUB_TELEMETRY", raising=False)
    with dlt_run_settings():
        assert dlt.config.get("runtime.log_level") == "WARNING"
        assert dlt.config.get("runtime.dlthub_telemetry") is False
    assert dlt.config.get("runtime.dlthub_telemetry") is None


def test_no_loaded_package_with_data_remains(
    sb: SandboxProcess, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two chunks of orders (20 pages in 10s) still leave several packages, in fewer commits.
    monkeypatch.setenv("SOURCES__CIKLEK__CHECKPOINT_PAGES", "10")
    result = run_sync(SyncOptions(resources=["orders", "customers"], progress=False))
    assert result.exit_code == 0 and result.report.outcome("orders").chunks > 1
    home = Path(os.environ["CIKLEK_HOME"])
    loaded = home / "pipelines" / "ciklek" / "load" / "loaded"
    assert list(loaded.iterdir())  # dlt keeps each package's record (schema, state)...
    data = [p for p in loaded.rglob("*") if p.is_file() and "completed_jobs" in p.parts]
    assert data == []  # ...but not the customer data in it


def test_runs_at_once_in_one_process_give_the_host_its_settings_back() -> None:
    """Two runs' settings overlapping out of order (Dagster's threads): the host's come back."""
    import threading

    assert dlt.config.get("runtime.log_level") is None
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[object] = []

    def first() -> None:
        with dlt_run_settings(log_level="CRITICAL"):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with dlt_run_settings(log_level="INFO"):
            second_in.set()
            first_out.wait(10)  # the first run ends while this one still runs
            seen.append(dlt.config.get("runtime.log_level"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen == ["CRITICAL"]  # still the (first run's) run settings while a run goes on
    assert dlt.config.get("runtime.log_level") is None
