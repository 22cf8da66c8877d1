"""The warehouse side of a run: settings refused up front, wait lines, a fault ending the chunk
loop, the run row held back while a failed chunk is pending, the read copy's publication.

DuckDB's real exceptions are raised by real DuckDB calls here; the pipeline is a real dlt
pipeline that never connects unless a test makes it.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import dlt
import duckdb
import pytest

from connector.config.settings import Settings, load_settings
from connector.errors import (
    CiklekError,
    ConfigError,
    DestinationCredentialsRefused,
    DestinationNeedsPerson,
    DestinationUnavailable,
    QuotaExhausted,
)
from connector.warehouse.checks import (
    WaitLines,
    check_destination_config,
    check_read_copy,
    destination_label,
    duckdb_database,
)
from connector.warehouse.faults import (
    DestinationFault,
    FaultKind,
    destination_exit_code,
    may_record_run,
    stop_on_fault,
)
from connector.warehouse.read_copy import publish_after_run
from tests.duckdb_holder import Holder


@dataclass
class Result:
    exit_code: int = 0
    error: CiklekError | None = None
    messages: list[str] = field(default_factory=list)


def pipeline_for(destination: object, tmp_path: Path) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=f"p{uuid.uuid4().hex[:8]}",
        destination=destination,  # type: ignore[arg-type]
        dataset_name="ciklek",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def settings(**values: object) -> Settings:
    return load_settings(api_key="bsk_test_x", **values)


def test_labels_name_the_place_never_the_password(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    assert destination_label(pipeline_for(dlt.destinations.duckdb(str(db)), tmp_path)) == (
        f"duckdb {db}"
    )
    pg = pipeline_for(dlt.destinations.postgres("postgresql://u:s3cret@db.local:5433/wh"), tmp_path)
    assert destination_label(pg) == "postgres db.local:5433/wh"


def test_the_destination_is_resolved_once_per_pipeline_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks before the first request and the labels share one resolution per run."""
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://u:pw@first.local/wh")
    pg = pipeline_for(dlt.destinations.postgres(), tmp_path)
    asked = 0
    resolve = pg.destination_client

    def counted() -> object:
        nonlocal asked
        asked += 1
        return resolve()

    monkeypatch.setattr(pg, "destination_client", counted)
    check_destination_config(pg)
    assert destination_label(pg) == destination_label(pg) == "postgres first.local:5432/wh"
    assert duckdb_database(pg) is None
    assert asked == 1
    # A new pipeline object (the next run) reads the settings as they are then.
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://u:pw@second.local/wh")
    assert destination_label(pipeline_for(dlt.destinations.postgres(), tmp_path)) == (
        "postgres second.local:5432/wh"
    )
    # Missing credentials are said (exit 2) and not remembered: set, they are found.
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS")
    bare = pipeline_for(dlt.destinations.postgres(), tmp_path)
    with pytest.raises(ConfigError, match="is not configured"):
        check_destination_config(bare)
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://u:pw@third.local/wh")
    assert destination_label(bare) == "postgres third.local:5432/wh"


def test_read_copy_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    duck = pipeline_for(dlt.destinations.duckdb(str(db)), tmp_path)
    check_read_copy(duck, settings(), "ciklek")  # unset: nothing to check
    check_read_copy(duck, settings(duckdb_read_copy=str(tmp_path / "w_read.duckdb")), "ciklek")
    with pytest.raises(ConfigError, match="is the DuckDB file the sync writes"):
        check_read_copy(duck, settings(duckdb_read_copy=str(tmp_path / "." / "w.duckdb")), "ciklek")
    with pytest.raises(ConfigError, match="ambiguous"):  # DuckDB would name its catalog ciklek
        check_read_copy(duck, settings(duckdb_read_copy=str(tmp_path / "ciklek.duckdb")), "ciklek")
    pg = pipeline_for(dlt.destinations.postgres("postgresql://u:p@h:5432/d"), tmp_path)
    with pytest.raises(ConfigError, match="the destination is 'postgres'"):
        check_read_copy(pg, settings(duckdb_read_copy=str(tmp_path / "c.duckdb")), "ciklek")


def fault(holder: str | None) -> DestinationFault:
    return DestinationFault(FaultKind.TRANSIENT, "locked", "wait", locked=True, lock_holder=holder)


def test_wait_lines_name_the_holder_once_per_interval_or_when_it_changes() -> None:
    stream = io.StringIO()
    lines = WaitLines("duckdb /w.duckdb", interval=3600, stream=stream)
    lines(fault("python3 (PID 7)"), 29.4)
    lines(fault("python3 (PID 7)"), 28.4)  # same holder, within the interval: quiet
    lines(fault("duckdb (PID 9)"), 27.4)  # another holder: said at once
    printed = stream.getvalue().splitlines()
    assert printed == [
        "ciklek: destination duckdb /w.duckdb: the DuckDB file is held by python3 (PID 7); "
        "waiting up to 29s more (destination_lock_wait_seconds) before any request is sent",
        "ciklek: destination duckdb /w.duckdb: the DuckDB file is held by duckdb (PID 9); "
        "waiting up to 27s more (destination_lock_wait_seconds) before any request is sent",
    ]
    every = WaitLines("duckdb /w.duckdb", interval=0, stream=stream)
    every(fault(None), 2)
    every(fault(None), 1)
    later = stream.getvalue().splitlines()[len(printed) :]
    assert len(later) == 2 and all("held by another process" in line for line in later), later


def test_exit_codes_of_destination_errors() -> None:
    assert destination_exit_code(DestinationUnavailable("x")) == 75
    assert destination_exit_code(DestinationCredentialsRefused("x")) == 3
    assert destination_exit_code(DestinationNeedsPerson("x")) == 7
    assert destination_exit_code(QuotaExhausted("x")) is None  # the API side decides its own
    assert destination_exit_code(None) is None


def test_a_recognised_fault_ends_the_loop_with_one_message_anything_else_propagates(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    pipeline = pipeline_for(dlt.destinations.duckdb(str(db)), tmp_path)
    holder = Holder(db)
    result = Result()
    try:
        with stop_on_fault(destination_label(pipeline), result):
            duckdb.connect(str(db))  # what dlt's load meets when an analyst holds the file
    finally:
        holder.close()
    assert isinstance(result.error, DestinationUnavailable)
    assert destination_exit_code(result.error) == 75
    [message] = result.messages
    assert message.startswith(f"destination duckdb {db}: the DuckDB file is locked")
    assert (
        f"(PID {holder.pid})" in message and "progress is kept up to the last committed" in message
    )
    with pytest.raises(ValueError), stop_on_fault(destination_label(pipeline), Result()):
        raise ValueError("a bug stays a bug")


def test_the_run_row_waits_while_a_failed_chunk_is_pending(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    pipeline = pipeline_for(dlt.destinations.duckdb(str(db)), tmp_path)
    pipeline.extract([{"a": 1}], table_name="t")  # a chunk fetched but never loaded
    assert pipeline.has_pending_data
    failed = Result(error=DestinationUnavailable("down"))
    assert not may_record_run(pipeline, failed)
    assert "not in _ciklek_sync_runs" in failed.messages[0]
    assert may_record_run(pipeline, Result())  # no fault: the usual run row
    pipeline.drop_pending_packages()
    assert may_record_run(pipeline, Result(error=DestinationUnavailable("down")))


def test_the_read_copy_is_published_after_rows_and_kept_when_nothing_changed(
    tmp_path: Path,
) -> None:
    db, copy = tmp_path / "w.duckdb", tmp_path / "copies" / "w_read.duckdb"
    pipeline = pipeline_for(dlt.destinations.duckdb(str(db)), tmp_path)
    pipeline.run([{"a": 1}], table_name="t")
    conf = settings(duckdb_read_copy=str(copy))
    result = Result()
    publish_after_run(pipeline, conf, result, {"rows": 0, "line_item_rows": 0})
    assert copy.exists()  # missing: published even after a run without rows
    assert result.messages == [f"read copy published: {copy} (analysts: open it, not w.duckdb)"]
    pipeline.run([{"a": 2}], table_name="t")
    publish_after_run(pipeline, conf, Result(), {"rows": 0, "line_item_rows": 0})
    with duckdb.connect(str(copy), read_only=True) as con:  # nothing loaded: copy not renewed
        assert con.sql("select count(*) from ciklek.t").fetchall() == [(1,)]
    publish_after_run(pipeline, conf, Result(), {"rows": 1, "line_item_rows": 0})
    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.sql("select count(*) from ciklek.t").fetchall() == [(2,)]
    failed = Result(exit_code=75, error=DestinationUnavailable("down"))
    publish_after_run(pipeline, conf, failed, {"rows": 5})
    assert failed.messages == []  # a warehouse in trouble is not copied


def test_a_copy_that_cannot_be_written_needs_a_person_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    pipeline = pipeline_for(dlt.destinations.duckdb(str(db)), tmp_path)
    pipeline.run([{"a": 1}], table_name="t")
    (tmp_path / "not-a-dir").write_text("x")
    copy = tmp_path / "not-a-dir" / "copy.duckdb"
    result = Result(exit_code=75)
    publish_after_run(pipeline, settings(duckdb_read_copy=str(copy)), result, {"rows": 1})
    assert result.exit_code == 7 and isinstance(result.error, DestinationNeedsPerson)
    assert result.messages[0].startswith(f"read copy not published: read copy {copy}")
    held = Holder(db)  # the main file held by an analyst: the copy waits for the next run
    try:
        ok_copy = tmp_path / "w_read.duckdb"
        later = Result(exit_code=0)
        publish_after_run(pipeline, settings(duckdb_read_copy=str(ok_copy)), later, {"rows": 1})
    finally:
        held.close()
    assert later.exit_code == 75 and f"(PID {held.pid})" in later.messages[0]
    assert not ok_copy.exists() and not list(tmp_path.glob(".*partial"))
