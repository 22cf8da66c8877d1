"""A run holds its DuckDB file open (connector/warehouse/held_open.py), checked for real: the
write-ahead log, another process refused, the file released at the end, and other destinations
left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dlt
import duckdb
import pytest

from connector.errors import DestinationUnavailable
from connector.warehouse.held_open import checkpoint, held_open
from tests.duckdb_holder import Holder
from tests.helpers import scratch_pipeline

# Another process opening the file read-only, as an analyst's shell does; prints the row count.
OPEN = """
import duckdb, sys
print(duckdb.connect(sys.argv[1], read_only=True).sql("select count(*) from d.t").fetchall()[0][0])
"""


def _open_elsewhere(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN, str(db)], capture_output=True, text=True, timeout=60
    )


def test_a_held_file_keeps_loads_in_its_log_until_the_checkpoint_and_refuses_other_processes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    wal = db.with_name(db.name + ".wal")
    pipeline = scratch_pipeline(dlt.destinations.duckdb(str(db)), tmp_path)
    with held_open(pipeline):
        pipeline.run([{"a": i} for i in range(500)], table_name="t")
        # dlt closed its connection but the database stayed open: nothing checkpointed yet
        assert wal.exists() and wal.stat().st_size > 0
        checkpoint(pipeline)
        assert not wal.exists() or wal.stat().st_size == 0  # the chunk is in the file itself
        pipeline.run([{"a": i} for i in range(500, 600)], table_name="t")
        refused = _open_elsewhere(db)
        assert refused.returncode != 0 and "lock" in refused.stderr.lower(), refused.stderr
    opened = _open_elsewhere(db)  # released: the last close wrote the log into the file
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "600"
    assert not wal.exists() or wal.stat().st_size == 0


def test_without_a_held_file_every_close_checkpoints_and_other_destinations_are_left_alone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    wal = db.with_name(db.name + ".wal")
    plain = scratch_pipeline(dlt.destinations.duckdb(str(db)), tmp_path)
    plain.run([{"a": 1}], table_name="t")
    assert not wal.exists() or wal.stat().st_size == 0  # what `checkpoint` keeps true when held
    checkpoint(plain)  # not held: nothing to do, and no error
    conn = duckdb.connect(":memory:")  # a database that is no file: nothing to hold
    memory = scratch_pipeline(dlt.destinations.duckdb(conn), tmp_path)
    with held_open(memory):
        memory.run([{"a": 1}, {"a": 2}], table_name="t")
        checkpoint(memory)
    assert conn.sql("select count(*) from d.t").fetchall() == [(2,)]  # still the caller's
    assert _open_elsewhere(db).stdout.strip() == "1"


def test_a_file_another_process_took_since_the_check_is_try_later_naming_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    pipeline = scratch_pipeline(dlt.destinations.duckdb(str(db)), tmp_path)
    holder = Holder(db)
    try:
        with pytest.raises(DestinationUnavailable) as info, held_open(pipeline):
            pytest.fail("the hold cannot begin while another process has the file")
    finally:
        holder.close()
    assert str(info.value).startswith(f"destination duckdb {db}: the DuckDB file is locked")
    assert f"PID {holder.pid}" in str(info.value)
