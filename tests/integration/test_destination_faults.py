"""Destination failures are classified from the drivers' real exceptions, never from a mock.

Each test provokes the failure for real: another process holding the DuckDB file, a PostgreSQL
port nobody listens on, a DuckDB file on a tiny full tmpfs, a reader holding the read copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dlt
import duckdb
import pytest

from connector.errors import DestinationUnavailable
from connector.warehouse.checks import open_destination
from connector.warehouse.faults import FaultKind, classify
from connector.warehouse.read_copy import publish_read_copy
from tests.duckdb_holder import Holder
from tests.helpers import scratch_pipeline, tmpfs


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table t as select 1 as a")
    return path


def test_duckdb_file_held_by_another_process_is_try_later_naming_the_holder(
    db: Path, tmp_path: Path
) -> None:
    holder = Holder(db)
    try:
        pipeline = scratch_pipeline(dlt.destinations.duckdb(str(db)), tmp_path)
        waits: list[float] = []
        with pytest.raises(DestinationUnavailable) as info:
            open_destination(
                pipeline, "duckdb", wait_seconds=3, on_wait=lambda f, left: waits.append(left),
                sleep=lambda s: None, clock=iter([0.0, 1.0, 2.0, 3.0, 4.0]).__next__,
            )  # fmt: skip
        assert f"PID {holder.proc.pid}" in str(info.value)
        assert info.value.locked
        assert waits == [2.0, 1.0]  # waited while time was left, then gave up
    finally:
        holder.close()


def test_duckdb_lock_released_within_the_wait_opens(db: Path, tmp_path: Path) -> None:
    holder = Holder(db)
    pipeline = scratch_pipeline(dlt.destinations.duckdb(str(db)), tmp_path)
    seen: list[str | None] = []

    def on_wait(fault: object, left: float) -> None:
        seen.append(getattr(fault, "lock_holder", None))
        holder.close()  # the analyst closes the notebook while we wait

    open_destination(pipeline, "duckdb", wait_seconds=30, on_wait=on_wait, sleep=lambda s: None)
    assert len(seen) == 1 and seen[0] is not None and str(holder.proc.pid) in seen[0]


def test_postgres_unreachable_is_try_later(tmp_path: Path) -> None:
    dsn = "postgresql://ciklek:secretpw@127.0.0.1:1/nothing"
    pipeline = scratch_pipeline(dlt.destinations.postgres(dsn), tmp_path)
    with pytest.raises(DestinationUnavailable) as info:
        open_destination(pipeline, "postgres", wait_seconds=30, sleep=lambda s: None)
    assert "unreachable" in str(info.value)
    assert "secretpw" not in str(info.value)
    assert not info.value.locked


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path, "2m") as mnt:
        yield mnt


def test_duckdb_out_of_space_needs_a_person(full_disk: Path, tmp_path: Path) -> None:
    pipeline = scratch_pipeline(dlt.destinations.duckdb(str(full_disk / "w.duckdb")), tmp_path)
    rows = [{"a": i, "b": os.urandom(200).hex()} for i in range(4000)]
    with pytest.raises(Exception) as info:
        for _ in range(10):
            pipeline.run(rows, table_name="t")
    fault = classify(info.value)
    assert fault is not None and fault.kind is FaultKind.NEEDS_PERSON
    assert "space" in fault.cause


def test_an_unrelated_error_stays_unclassified() -> None:
    assert classify(ValueError("boom")) is None
    assert classify(RuntimeError("No space left on device")) is None  # text alone decides nothing


def test_read_copy_is_published_atomically_while_a_reader_holds_the_old_one(
    db: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "analysts" / "copy.duckdb"
    publish_read_copy(db, copy)
    reader = Holder(copy, "select count(*) from t")
    try:
        assert reader.first == "1"
        with duckdb.connect(str(db)) as con:
            con.execute("insert into t select range from range(5)")
        publish_read_copy(db, copy)  # the reader's open copy does not block this
        assert reader.ask() == "1"  # its view stays consistent
        with duckdb.connect(str(copy), read_only=True) as con:
            assert con.sql("select count(*) from t").fetchall() == [(6,)]  # reopening: new rows
        assert not list(copy.parent.glob(".*partial"))
    finally:
        reader.close()
