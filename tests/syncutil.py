"""Helpers shared by the resume / quota / status tests: fast settings, API truth, table dumps.

The connector's tables are compared with what the API serves (or with a clean sync), so a test
fails when a record is lost, duplicated or stale, whatever the code path that caused it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.helpers import CIKLEK_BIN, DEFAULT_DB, query, sync_env
from tests.inproc import Result, run_main
from tests.sandbox_proc import SandboxProcess

# A small dataset (400 orders: at least one block of >= 150 equal updated_at) and no server
# window limit, so only the behaviour under test decides how many requests a run sends.
SANDBOX_FLAGS: tuple[str | int, ...] = (
    "--orders", 400, "--customers", 30, "--products", 20, "--window-limit", 1_000_000,
)  # fmt: skip
PAGE = 20
ORDER_PAGES = 20  # 400 orders / 20 per page
CHUNK_PAGES = 3


def fast_env(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    """Small pages, small chunks, no client-side throttle: many pages and commits, cheaply."""
    env = sync_env(sb)
    env.update(
        SOURCES__CIKLEK__PAGE_SIZE=str(PAGE),
        SOURCES__CIKLEK__CHECKPOINT_PAGES=str(CHUNK_PAGES),
        SOURCES__CIKLEK__REQUESTS_PER_MINUTE="1000000",
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    env.update(extra)
    return env


def set_env(monkeypatch: Any, env: dict[str, str]) -> None:
    for name, value in env.items():
        if name.startswith(("SOURCES__", "RUNTIME__", "CIKLEK_HOME")):
            monkeypatch.setenv(name, value)


def instant(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC) if text else None


def api_records(sb: SandboxProcess, resource: str = "orders") -> dict[str, dict[str, Any]]:
    """Every record the API serves now, by id (the truth a finished sync must equal)."""
    records: dict[str, dict[str, Any]] = {}
    after = None
    with sb.client() as http:
        while True:
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            body = http.get(f"/{resource}", params=params).json()
            for record in body["data"]:
                records[record["id"]] = record
            after = body["meta"]["next_cursor"]
            if after is None:
                return records


def order_rows(db: Path | str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "select id, status, total, updated_at from ciklek.orders order by id",
    )


def item_rows(db: Path | str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "select id, order_id, sku, quantity, amount from ciklek.order_line_items "
        "where not _ciklek_deleted order by id",
    )


def expected_order_rows(sb: SandboxProcess) -> list[tuple[Any, ...]]:
    from decimal import Decimal

    return sorted(
        (r["id"], r["status"], Decimal(r["total"]).scaleb(-2), instant(r["updated_at"]))
        for r in api_records(sb).values()
    )


def assert_orders_match_api(db: Path | str, sb: SandboxProcess) -> None:
    rows = order_rows(db)
    assert len(rows) == len({r[0] for r in rows}), "duplicate order ids"
    assert rows == expected_order_rows(sb)


def requests_sent(sb: SandboxProcess) -> int:
    return int(sb.stats()["requests"])


def requests_after_kill(sb: SandboxProcess, quiet: float = 0.25, timeout: float = 10.0) -> int:
    """The sandbox's count once it stops moving: a request the killed process had already sent
    may still be in the sandbox's socket buffer when the kill returns, and be counted a moment
    later (seen under load: the rerun was then charged one request the killed run spent)."""
    deadline = time.monotonic() + timeout
    count = requests_sent(sb)
    while True:
        time.sleep(quiet)
        now = requests_sent(sb)
        if now == count or time.monotonic() > deadline:
            return now
        count = now


def read_status(home: Path, pipeline: str = "ciklek") -> dict[str, Any] | None:
    try:
        return json.loads((home / "runs" / pipeline / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def committed_pages(home: Path, resource: str = "orders") -> int:
    """Pages of the traversal in progress that a committed chunk covers (from status.json)."""
    doc = read_status(home) or {}
    trav = (doc.get("resources") or {}).get(resource, {}).get("traversal") or {}
    return int(trav.get("pages") or 0)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def start_sync(env: dict[str, str], *args: str, cwd: Path, log: Path) -> subprocess.Popen[str]:
    """`ciklek sync` in the background (its output goes to `log`, never to a full pipe)."""
    handle = log.open("w")
    return subprocess.Popen(
        [CIKLEK_BIN, "sync", *args],
        env=env,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_sync_main(env: dict[str, str], *args: str, cwd: Path | None = None) -> Result:
    """`ciklek sync ARGS` in this process (tests/inproc.py): where no process is the point."""
    return run_main("sync", *args, env=env, cwd=cwd)


def run_sync_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`ciklek sync ARGS` as a process of its own (the lock is held by another process)."""
    return subprocess.run(
        [CIKLEK_BIN, "sync", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def env_home(env: dict[str, str]) -> Path:
    return Path(env.get("CIKLEK_HOME") or os.environ["CIKLEK_HOME"])


def splits_in(*texts: str, resource: str = "orders") -> int:
    """Splits into `updated_since` ranges the runs' output told (`split orders: at ...`).

    With `max_concurrency` above 1 a long traversal walks in ranges: each split may cost one
    request (a range's last page is partial) and the open last range looks once more when the
    others are done, so request counts are bounded by `pages + splits + 1`, not equal to pages.
    """
    line = re.compile(rf"split {re.escape(resource)}: at [^,\s]+, ranges \d+")
    # Whole lines of that shape, not a count of words in text that holds timestamps and ids.
    return sum(1 for text in texts for ln in text.splitlines() if line.fullmatch(ln))


@contextlib.contextmanager
def shared_warehouse(base: Path, flags: tuple[str | int, ...]) -> Iterator[SandboxProcess]:
    """For a module fixture: a sandbox, and `base/work` (the working directory, where the
    DuckDB file goes) and `base/ciklek-home` (the state directory) for the syncs that build the
    warehouse several tests then read; each test takes its own `copy_warehouse` of it."""
    import pytest

    (base / "work").mkdir()
    with SandboxProcess(*[str(f) for f in flags]) as sandbox, pytest.MonkeyPatch.context() as mp:
        mp.chdir(base / "work")
        mp.setenv("CIKLEK_HOME", str(base / "ciklek-home"))
        yield sandbox


def copy_warehouse(base: Path, work: Path, monkeypatch: Any) -> None:
    """This test's own copy of a `shared_warehouse`'s DuckDB file (into `work`) and state
    directory (beside it), which the test's syncs then use."""
    shutil.copy(base / "work" / DEFAULT_DB, work / DEFAULT_DB)
    shutil.copytree(base / "ciklek-home", work.parent / "ciklek-home")
    monkeypatch.setenv("CIKLEK_HOME", str(work.parent / "ciklek-home"))
