"""The PostgreSQL side of a sync fails as clearly as the API side, through the `ciklek` CLI.

Unreachable (a port nobody listens on), a wrong password (the shared cluster of `make test`, which
takes scram passwords over TCP), and a server stopped in the middle of a sync: a private cluster
of this module's own (tests/pg_private.py), never the shared one other tests are using.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.e2e.test_destination_duckdb import api_line_items, clean
from tests.helpers import CIKLEK_BIN, pg_dsn, sync_env
from tests.inproc import run_main
from tests.pg_private import PrivateCluster, _free_port
from tests.sandbox_proc import SandboxProcess


def pg(dsn: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg2

    con = psycopg2.connect(dsn)
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        con.close()


def test_postgres_unreachable_exits_75_before_any_request(sandbox, tmp_path) -> None:
    sb: SandboxProcess = sandbox
    dsn = f"postgresql://ciklek:hunter2secret@127.0.0.1:{_free_port()}/warehouse"
    env = sync_env(sb, DESTINATION__POSTGRES__CREDENTIALS=dsn)
    done = run_main("sync", "--destination", "postgres", env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 75, output
    clean(output)
    assert "hunter2secret" not in output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "destination postgres 127.0.0.1:" in lines[0]
    assert "unreachable" in lines[0] and "run again" in lines[0]
    assert sb.stats()["requests"] == 0


@pytest.mark.postgres
def test_a_wrong_postgres_password_exits_3_naming_the_destination_credentials(sandbox) -> None:
    sb: SandboxProcess = sandbox
    parts = urllib.parse.urlsplit(pg_dsn())
    netloc = f"{parts.username}:wrong-pw-0451@{parts.hostname}:{parts.port}"
    dsn = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    env = sync_env(sb, DESTINATION__POSTGRES__CREDENTIALS=dsn)
    done = run_main("sync", "--destination", "postgres", env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    clean(output)
    assert "wrong-pw-0451" not in output and (parts.password or "") not in output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the destination credentials" in lines[0]
    assert "DESTINATION__POSTGRES__CREDENTIALS" in lines[0] and "API key" not in lines[0]
    assert sb.stats()["requests"] == 0


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres
def test_postgres_stopped_mid_sync_exits_75_and_the_rerun_loses_and_doubles_nothing(
    sandbox_factory, private_pg: PrivateCluster
) -> None:
    sb: SandboxProcess = sandbox_factory(
        "--orders", 300, "--customers", 10, "--products", 5, "--latency-ms", 20
    )
    env = sync_env(
        sb,
        DESTINATION__POSTGRES__CREDENTIALS=private_pg.dsn,
        SOURCES__CIKLEK__CHECKPOINT_PAGES="2",
        SOURCES__CIKLEK__PAGE_SIZE="25",
        SOURCES__CIKLEK__PROGRESS_INTERVAL_SECONDS="0",  # a line per page
    )
    args = ["sync", "--destination", "postgres", "--resources", "orders", "--progress", "lines"]
    proc = subprocess.Popen(
        [CIKLEK_BIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:  # page 5 is fetched once the first two chunks are committed
            seen.append(line)
            if line.startswith("progress orders: page 5/"):
                break
        private_pg.stop()
        out, rest = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + out + rest
    assert proc.returncode == 75, output
    clean(output)
    assert private_pg.password not in output
    assert "destination postgres 127.0.0.1:" in output and "progress is kept" in output
    spent = sb.stats()["requests"]
    assert 5 <= spent < 12  # stopped part-way: 300 orders are 12 pages
    status = run_main("status", env=env)  # the run row could not be written; status.json has it
    assert "last run: stopped_try_later (exit 75)" in status.stdout, status.stdout
    assert "the warehouse is unreachable or restarting" in status.stdout

    private_pg.start()
    kept = pg(private_pg.dsn, "select count(*) from ciklek.orders")[0][0]
    assert 100 <= kept < 300  # the committed chunks are there (4 pages of 25 at least)
    again = run_main(*args, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    orders = pg(private_pg.dsn, "select count(*), count(distinct id) from ciklek.orders")
    assert orders == [(300, 300)]
    items = pg(
        private_pg.dsn,
        "select count(*), count(distinct (order_id, id)) from ciklek.order_line_items",
    )
    assert items[0][0] == items[0][1] == api_line_items(sb)
    runs = pg(private_pg.dsn, "select outcome from ciklek._ciklek_sync_runs")
    assert runs == [("completed",)]  # the failed run could not be recorded; status.json has it
