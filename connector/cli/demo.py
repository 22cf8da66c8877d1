"""`ciklek demo`: the whole product in one command, with no Ciklek account.

Starts the bundled sandbox on a free loopback port, syncs it into a local DuckDB file with a
throwaway state dir (so the user's real pipelines are untouched), prints the summary and one
analyst query, then stops the sandbox. Only the CLI imports this module.

The sandbox child is started so that it cannot outlive the demo (the kernel kills it when the
demo dies, and the sandbox watches its parent too) and so that it sees none of the user's
secrets: its environment is an allow-list, so a real SOURCES__CIKLEK__API_KEY or a warehouse DSN
never reaches it. The demo replaces only a file that is a DuckDB database (or empty): a typo in
`--file` must not eat someone's notes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb
from rich.table import Table

from connector.cli.tables import render, summary
from connector.config.settings import load_settings
from connector.errors import ConfigError
from connector.runs.options import SyncOptions
from connector.runs.sync import run_sync

ANALYST_QUERY = """
with items as (
    select order_id, count(*) as items, sum(quantity) as units
    from ciklek.order_line_items
    group by order_id
)
select o.currency,
       count(*)                    as orders,
       sum(o.total)                as revenue,
       sum(coalesce(i.items, 0))   as line_items,
       sum(coalesce(i.units, 0))   as units
from ciklek.orders o
left join items i on i.order_id = o.id
group by o.currency
order by revenue desc
"""


DEMONSTRATED = """\
what this demonstrated: a local sandbox of the Ciklek API (realistic made-up data, the real
rate limits) synced incrementally into DuckDB: money as DECIMAL in currency units, timestamps
in UTC, line items in their own table, every row stamped with _ciklek_synced_at, a run row in
_ciklek_sync_runs. Run `ciklek sync` against it again and only what changed is fetched.
The test suite's sandbox adds extreme amounts (`ciklek sandbox --extreme-values`: beyond
2**53 cents, negative credit totals) to prove money stays exact; this one has none."""


# What the sandbox child may see of our environment: enough to run Python, nothing else.
_CHILD_ENV = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
)
_PR_SET_PDEATHSIG = 1
# A DuckDB database file carries this magic at byte offset 8 (after an 8-byte checksum).
DUCKDB_MAGIC, DUCKDB_MAGIC_OFFSET = b"DUCK", 8


def child_env(parent: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of `parent` (default: os.environ): no keys, DSNs or dlt settings."""
    source = os.environ if parent is None else parent
    return {k: v for k, v in source.items() if k in _CHILD_ENV or k.startswith("LC_")}


def _die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: ask Linux to SIGKILL the child when the parent dies (no-op elsewhere)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            except (OSError, AttributeError):
                pass  # the sandbox's own parent watchdog still applies
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def check_replaceable(target: Path) -> None:
    """Refuse (exit 2) to replace anything but a DuckDB database or an empty file."""
    try:
        st = target.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"--file {target} exists and is not a regular file: choose another path")
    if st.st_size == 0:
        return
    with target.open("rb") as handle:
        head = handle.read(DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC))
    if head[DUCKDB_MAGIC_OFFSET:] != DUCKDB_MAGIC:
        raise ConfigError(
            f"--file {target} exists and is not a DuckDB database; the demo replaces its file, "
            "so choose another path (or delete it yourself)"
        )


def start_sandbox(*flags: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start `python -m connector.sandbox --port 0` and read its one-line JSON banner."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.sandbox", "--port", "0", "--exit-with-parent", *flags],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        preexec_fn=_die_with_parent(os.getpid()),  # safe: no threads run yet
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the sandbox did not start (no banner line)")
    return proc, json.loads(line)


def run_demo(
    *, orders: int = 2000, duckdb_file: str = "ciklek_demo.duckdb", printer: Callable[[str], None]
) -> int:
    target = Path(duckdb_file).absolute()
    check_replaceable(target)
    target.unlink(missing_ok=True)
    proc, banner = start_sandbox("--orders", str(orders), "--seed", "7")
    try:
        keys = banner["keys"]
        assert isinstance(keys, dict)
        key = next(iter(keys))
        printer(f"sandbox running at {banner['url']} with {orders:,} orders")
        with tempfile.TemporaryDirectory(prefix="ciklek-demo-") as state_dir:
            settings = load_settings(
                base_url=str(banner["url"]), api_key=key, state_dir=state_dir, resources=None
            )
            # The user's read copy belongs to their real pipeline: never fill it with demo data.
            settings = dataclasses.replace(settings, duckdb_read_copy=None)
            result = run_sync(
                SyncOptions(duckdb_file=str(target), progress=False), settings=settings
            )
        printer(summary(result))
        with duckdb.connect(str(target), read_only=True) as con:
            counts: dict[str, int] = {}
            for table in ("orders", "order_line_items", "customers", "products"):
                row = con.execute(f"select count(*) from ciklek.{table}").fetchone()
                counts[table] = int(row[0]) if row else 0
            printer("row counts: " + ", ".join(f"{t}={n:,}" for t, n in counts.items()))
            printer("analyst query (revenue by currency):" + ANALYST_QUERY.rstrip())
            cursor = con.execute(ANALYST_QUERY)
            names = [d[0] for d in cursor.description or []]
            result_table = Table(*names)
            for values in cursor.fetchall():
                result_table.add_row(
                    *(f"{v:,}" if isinstance(v, int | Decimal) else str(v) for v in values)
                )
            printer(render(result_table))
        printer(
            f'query it yourself: ciklek query --duckdb-file {target} "select count(*) from orders"'
        )
        printer(
            "analysts beside hourly syncs: a session open on the sync's file, even "
            "`duckdb -readonly`, makes the sync wait; set SOURCES__CIKLEK__DUCKDB_READ_COPY="
            "/path/ciklek_read.duckdb (duckdb_read_copy in .dlt/config.toml) and query that copy "
            "instead (docs/tables.md: 'Analysts and scheduled syncs on one DuckDB file')"
        )
        printer(DEMONSTRATED)
        return result.exit_code
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
