"""Crash recovery reaches dlt's extracted packages through one private accessor: these tests fail
loudly the day dlt moves it (or the installed dlt is not the one `runs/recovery.py` names)."""

from __future__ import annotations

from pathlib import Path

import dlt
from dlt.common.storages.load_package import PackageStorage

from connector.runs.recovery import TESTED_DLT, extracted_packages, recover, refresh_pending


def pipeline_in(tmp_path: Path) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name="recovery_probe",
        destination=dlt.destinations.duckdb(str(tmp_path / "w.duckdb")),
        dataset_name="probe",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def test_the_installed_dlt_is_the_version_recovery_was_checked_against() -> None:
    assert dlt.__version__.startswith(TESTED_DLT + "."), (
        f"dlt {dlt.__version__}: runs/recovery.py was checked against dlt {TESTED_DLT}; check "
        "its private accessor on this version, then update TESTED_DLT and pyproject's pin"
    )


def test_the_private_accessor_still_reaches_the_extracted_packages(tmp_path: Path) -> None:
    pipeline = pipeline_in(tmp_path)
    pipeline.extract([{"id": 1}, {"id": 2}], table_name="things")
    [load_id] = pipeline.list_extracted_load_packages()
    storage = extracted_packages(pipeline)
    assert isinstance(storage, PackageStorage)
    assert storage.list_packages() == [load_id]  # dlt's public API cannot see it (not loadable)
    assert storage.get_load_package_state(load_id)["pipeline_state"]["_dlt_load_id"] == load_id
    assert not refresh_pending(pipeline)  # an extract that drops no table


def test_a_pending_refresh_is_seen_and_anything_else_is_aborted(tmp_path: Path) -> None:
    pipeline = pipeline_in(tmp_path)
    pipeline.run([{"id": 1}], table_name="things")  # a committed load: the table exists
    things = dlt.resource([{"id": 2}], name="things")
    pipeline.extract(things, refresh="drop_resources")
    assert refresh_pending(pipeline)  # the package that starts a full refresh
    pipeline.drop_pending_packages()
    pipeline.extract([{"id": 3}], table_name="things")
    assert pipeline.has_pending_data
    recover(pipeline)  # a killed run's chunk: aborted, never loaded twice
    assert not pipeline.has_pending_data
    with pipeline.sql_client() as client:
        assert client.execute_sql("SELECT id FROM things") == [(1,)]
