"""The run log read back from the warehouse: what a fresh runner can still know."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dlt
import pytest

from connector.errors import ConfigError
from connector.runs.freshness import parse_age
from connector.warehouse.run_log import RunRecord, last_complete_sync, read_runs, requests_on
from tests.helpers import DEFAULT_DB, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

T0 = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
ALL = ("orders", "customers", "products")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), ("2d", 172800)]
)
def test_parse_age_units(text: str, seconds: int) -> None:
    assert parse_age(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "-1h", "0m", "6w", "1.5.h"])
def test_parse_age_refuses_junk(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-age"):
        parse_age(text)


def test_last_complete_sync_skips_windows_partial_resources_and_failures() -> None:
    runs = [
        RunRecord(T0, "completed", ALL, 10),
        RunRecord(T0 + dt.timedelta(hours=1), "stopped_try_later", ALL, 5),
        RunRecord(T0 + dt.timedelta(hours=2), "completed", ("orders",), 3),
        RunRecord(T0 + dt.timedelta(hours=3), "completed", ALL, 3, kind="window"),
        RunRecord(T0 - dt.timedelta(hours=1), "completed_with_rejects", ALL, 9),
    ]
    assert last_complete_sync(runs, ALL) == runs[0]
    assert last_complete_sync(runs, ("orders",)) == runs[2]
    assert last_complete_sync(runs[1:2], ALL) is None


def test_requests_on_counts_runs_started_that_utc_day() -> None:
    runs = [
        RunRecord(T0, "completed", ALL, 10),
        RunRecord(T0.replace(hour=23, minute=59), "failed", ALL, 4),
        RunRecord(T0 + dt.timedelta(days=1), "completed", ALL, 100),
        RunRecord(
            dt.datetime(2026, 11, 29, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))), "x", ALL, 7
        ),
    ]
    assert requests_on(runs, T0.date()) == 14  # 01:00+05:00 is the 28th in UTC


def test_read_runs_from_a_synced_duckdb_file(sandbox: SandboxProcess, clean_env: Path) -> None:
    first = run_main("sync", env=sync_env(sandbox))
    assert first.returncode == 0, first.stderr
    second = run_main("sync", "--resources", "orders", env=sync_env(sandbox))
    assert second.returncode == 0, second.stderr
    window = run_main("sync", "--since", "2020-01-01", env=sync_env(sandbox))
    assert window.returncode == 0, window.stderr
    pipeline = dlt.pipeline(
        pipeline_name="reader",
        destination=dlt.destinations.duckdb(str(clean_env / DEFAULT_DB)),
        dataset_name="ciklek",
        pipelines_dir=str(clean_env / "reader"),
    )
    runs = sorted(read_runs(pipeline, "ciklek"), key=lambda r: r.started_at)
    assert [r.outcome for r in runs] == ["completed"] * 3
    assert [r.kind for r in runs] == ["sync", "sync", "window"]
    assert [set(r.resources) for r in runs] == [set(ALL), {"orders"}, set(ALL)]
    served = sandbox.stats()["requests"]
    assert sum(r.requests for r in runs) == served
    assert last_complete_sync(runs, ALL) == runs[0]
    assert read_runs(pipeline, "another_pipeline") == []


def test_read_runs_without_a_runs_table_is_empty(clean_env: Path) -> None:
    pipeline = dlt.pipeline(
        pipeline_name="reader",
        destination=dlt.destinations.duckdb(str(clean_env / "empty.duckdb")),
        dataset_name="ciklek",
        pipelines_dir=str(clean_env / "reader"),
    )
    assert read_runs(pipeline, "ciklek") == []
