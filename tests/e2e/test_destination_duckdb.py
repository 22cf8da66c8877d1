"""The DuckDB side of a sync fails as clearly as the API side, through the `ciklek` CLI.

Each failure is real: another process holding the file (what an analyst's `duckdb -readonly`
shell does), a file on a tiny tmpfs that fills up, a reader holding the read copy open.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.duckdb_holder import Holder
from tests.helpers import CIKLEK_BIN, query, sync_env, tmpfs
from tests.inproc import run_main
from tests.sandbox_proc import REPO_ROOT, SandboxProcess

ORDERS, CUSTOMERS, PRODUCTS = 120, 40, 20


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess(
        "--orders", str(ORDERS), "--customers", str(CUSTOMERS), "--products", str(PRODUCTS)
    ) as sb:
        yield sb


@pytest.fixture
def sb(shared_sandbox: SandboxProcess) -> SandboxProcess:
    shared_sandbox.control_post("reset_stats")
    return shared_sandbox


def clean(output: str) -> None:
    """None of these failures is a bug, and none prints a traceback."""
    assert "a bug" not in output
    assert "Traceback" not in output


def empty_file(path: Path) -> Path:
    with duckdb.connect(str(path)):
        pass
    return path


def test_a_reader_holding_the_file_makes_the_sync_wait_then_exit_75_spending_nothing(
    sb: SandboxProcess, tmp_path: Path
) -> None:
    db = empty_file(tmp_path / "w.duckdb")
    holder = Holder(db)
    try:
        env = sync_env(
            sb,
            DESTINATION__DUCKDB__CREDENTIALS=str(db),
            SOURCES__CIKLEK__DESTINATION_LOCK_WAIT_SECONDS="2",
        )
        done = run_main("sync", env=env)
    finally:
        holder.close()
    output = done.stdout + done.stderr
    assert done.returncode == 75, output
    clean(output)
    lines = done.stderr.strip().splitlines()
    assert f"(PID {holder.pid})" in lines[0] and "waiting up to" in lines[0]  # the wait
    assert f"(PID {holder.pid})" in lines[-1] and "locked by another process" in lines[-1]
    assert "duckdb_read_copy" in lines[-1]  # what to do
    assert sb.stats()["requests"] == 0


def test_the_reader_closing_within_the_wait_lets_the_sync_complete(
    sb: SandboxProcess, tmp_path: Path
) -> None:
    db = empty_file(tmp_path / "w.duckdb")
    holder = Holder(db)
    env = sync_env(
        sb,
        DESTINATION__DUCKDB__CREDENTIALS=str(db),
        SOURCES__CIKLEK__DESTINATION_LOCK_WAIT_SECONDS="120",
    )
    proc = subprocess.Popen(
        [CIKLEK_BIN, "sync", "--progress", "lines"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the sync says it waits, and for whom
        assert "held by" in first and f"(PID {holder.pid})" in first, first
        assert sb.stats()["requests"] == 0
        holder.close()  # the analyst closes the notebook
        out, rest = proc.communicate(timeout=180)
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, first + out + rest
    clean(first + out + rest)
    assert query(db, "select count(*) from ciklek.orders") == [(ORDERS,)]


# An analyst's session: opens the file read-only and, if DuckDB lets it, keeps it for 2 s.
SESSION = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
print("opened", flush=True)
time.sleep(2)
"""


def test_a_session_opened_mid_sync_is_refused_and_the_sync_loses_nothing(
    sb: SandboxProcess, tmp_path: Path
) -> None:
    """The sync holds its file from its first check to its end (held_open.py): a session that
    tries to open it between two chunks is refused at once, where it used to get in and fail
    the sync's next load (exit 75)."""
    db = tmp_path / "w.duckdb"
    env = sync_env(
        sb,
        DESTINATION__DUCKDB__CREDENTIALS=str(db),
        SOURCES__CIKLEK__PAGE_SIZE="20",
        SOURCES__CIKLEK__CHECKPOINT_PAGES="1",
    )
    sb.control_post("faults", json={"latency_ms": 50})
    proc = subprocess.Popen(
        [CIKLEK_BIN, "sync", "--resources", "orders"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while sb.stats()["requests"] < 2 and proc.poll() is None:  # a chunk in, five to go
            time.sleep(0.02)
        session = subprocess.run(
            [sys.executable, "-c", SESSION, str(db)], capture_output=True, text=True, timeout=60
        )
        running = proc.poll() is None
        out, err = proc.communicate(timeout=180)
    finally:
        sb.control_post("faults", json={"latency_ms": 0})
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert session.returncode != 0 and "lock" in session.stderr.lower(), session.stdout + err
    assert running, "the sync ended before the session's attempt ended: nothing was tested"
    assert proc.returncode == 0, out + err
    clean(out + err)
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(ORDERS, ORDERS)]


def test_the_cron_script_exits_75_on_a_held_file(sb: SandboxProcess, tmp_path: Path) -> None:
    db = empty_file(tmp_path / "w.duckdb")
    holder = Holder(db)
    try:
        env = sync_env(
            sb,
            SOURCES__CIKLEK__DESTINATION_LOCK_WAIT_SECONDS="0",
            DESTINATION__DUCKDB__CREDENTIALS=str(db),
        )
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "pipelines" / "ciklek_pipeline.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.close()
    assert done.returncode == 75, done.stdout + done.stderr
    clean(done.stdout + done.stderr)
    assert f"(PID {holder.pid})" in done.stderr
    assert sb.stats()["requests"] == 0


COUNT = "select count(*) from ciklek.orders"


def test_a_reader_of_the_read_copy_never_blocks_the_syncs_and_sees_them_on_reopening(
    sandbox_factory, tmp_path: Path
) -> None:
    sb: SandboxProcess = sandbox_factory("--orders", 60, "--customers", 10, "--products", 5)
    db, copy = tmp_path / "w.duckdb", tmp_path / "analysts" / "w_read.duckdb"
    env = sync_env(
        sb, DESTINATION__DUCKDB__CREDENTIALS=str(db), SOURCES__CIKLEK__DUCKDB_READ_COPY=str(copy)
    )
    first = run_main("sync", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"read copy published: {copy}" in first.stdout
    reader = Holder(copy, COUNT)  # an analyst keeps the copy open all day
    try:
        assert reader.first == "60"
        for created in (7, 5):  # two more hourly syncs while the reader stays
            sb.control_post("mutate", update=0, create=created, resource="orders")
            done = run_main("sync", env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            clean(done.stdout + done.stderr)
            assert "read copy published" in done.stdout
        assert reader.ask() == "60"  # a consistent view while it stays open
        assert query(copy, COUNT) == [(72,)]  # reopening shows both syncs' rows
        assert query(copy, "select count(*) from ciklek._ciklek_sync_runs") == [(3,)]
        assert not list(copy.parent.glob(".*partial"))
    finally:
        reader.close()


def test_read_copy_settings_that_cannot_work_exit_2_before_any_request(
    sb: SandboxProcess, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    same = run_main(
        "sync",
        env=sync_env(
            sb, DESTINATION__DUCKDB__CREDENTIALS=str(db), SOURCES__CIKLEK__DUCKDB_READ_COPY=str(db)
        ),
    )
    assert same.returncode == 2, same.stderr
    assert "is the DuckDB file the sync writes" in same.stderr
    pg = run_main(
        "sync",
        "--destination",
        "postgres",
        env=sync_env(
            sb,
            SOURCES__CIKLEK__DUCKDB_READ_COPY=str(tmp_path / "copy.duckdb"),
            DESTINATION__POSTGRES__CREDENTIALS="postgresql://u:pw@127.0.0.1:1/db",
        ),
    )
    assert pg.returncode == 2, pg.stderr
    assert "the destination is 'postgres'" in pg.stderr
    for done in (same, pg):
        assert len(done.stderr.strip().splitlines()) == 1
        clean(done.stdout + done.stderr)
    assert sb.stats()["requests"] == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path, "4m") as mnt:
        yield mnt


def test_a_full_disk_exits_7_keeps_progress_and_the_next_run_completes(
    sandbox_factory, small_disk: Path
) -> None:
    # The first chunk leaves a 3.4-3.9 MB file (DuckDB grows in 256 KiB blocks), 3,000 orders
    # make 4.7 MB: a 4 MiB disk fills part-way, never before the first commit.
    sb: SandboxProcess = sandbox_factory("--orders", 3000, "--customers", 10, "--products", 5)
    db = small_disk / "w.duckdb"
    env = sync_env(
        sb,
        DESTINATION__DUCKDB__CREDENTIALS=str(db),
        SOURCES__CIKLEK__CHECKPOINT_PAGES="2",
        SOURCES__CIKLEK__PAGE_SIZE="50",
    )
    full = run_main("sync", "--resources", "orders", env=env)
    output = full.stdout + full.stderr
    assert full.returncode == 7, output
    clean(output)
    assert "no space left" in output and "progress is kept" in output
    kept = query(db, COUNT)[0][0]
    assert 0 < kept < 3000  # the chunks committed before the disk filled are there
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    # The rest in one chunk: how the rerun commits is not the point, that it continues is.
    again = run_main(
        "sync", "--resources", "orders", env={**env, "SOURCES__CIKLEK__CHECKPOINT_PAGES": "100"}
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(3000, 3000)]
    items = query(
        db, "select count(*), count(distinct (order_id, id)) from ciklek.order_line_items"
    )
    assert items[0][0] == items[0][1] == api_line_items(sb)


def api_line_items(sb: SandboxProcess) -> int:
    """Line items of all orders, as the API serves them."""
    total, after = 0, None
    with sb.client() as http:
        while True:
            body = http.get("/orders", params={"limit": 100, **({"after": after} if after else {})})
            total += sum(len(order["line_items"]) for order in body.json()["data"])
            after = body.json()["meta"]["next_cursor"]
            if after is None:
                return total


def test_the_demo_points_analysts_at_the_read_copy_and_leaves_theirs_alone(
    tmp_path: Path,
) -> None:
    theirs = tmp_path / "theirs_read.duckdb"  # the user's real pipeline's copy
    env = {**os.environ, "SOURCES__CIKLEK__DUCKDB_READ_COPY": str(theirs)}
    done = run_main("demo", "--orders", "20", "--file", str(tmp_path / "demo.duckdb"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SOURCES__CIKLEK__DUCKDB_READ_COPY=" in done.stdout
    assert "Analysts and scheduled syncs on one DuckDB file" in done.stdout
    assert not theirs.exists()
