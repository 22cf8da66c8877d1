"""The client on a bad day, against the real sandbox over a real socket.

- A sync through 500s, dropped connections, truncated bodies and spurious 429s loads exactly
  the tables a fault-free sync loads.
- With a scaled window the limiter keeps a sync under the server's limit: zero 429s.
- A POST whose 201 is lost after the write is retried with the same Idempotency-Key and
  creates one order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.api.client import CiklekClient
from connector.config.redaction import ApiKey
from tests.helpers import query, sync_env
from tests.inproc import run_main
from tests.quick_retries import short_backoff
from tests.sandbox_proc import SandboxProcess

DATA_FLAGS = ("--seed", 7, "--orders", 240, "--customers", 40, "--products", 25)
TABLES = ("orders", "order_line_items", "customers", "products")


def table_rows(db: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of `table`, without the per-load bookkeeping columns (dlt's, and the load time
    `_ciklek_synced_at`, which differs between two syncs by design), ordered by id."""
    columns = [
        row[0]
        for row in query(
            db,
            "select column_name from information_schema.columns where table_schema = 'ciklek' "
            f"and table_name = '{table}' order by ordinal_position",
        )
        if not row[0].startswith("_dlt_") and row[0] != "_ciklek_synced_at"
    ]
    assert "id" in columns
    return query(db, f"select {', '.join(columns)} from ciklek.{table} order by id")


def sync_into(sb: SandboxProcess, workdir: Path, **extra: str) -> tuple[Path, str]:
    """One `ciklek sync` with its own working dir (so its own DuckDB file) and CIKLEK_HOME."""
    workdir.mkdir()
    env = sync_env(
        sb,
        CIKLEK_HOME=str(workdir / "home"),
        SOURCES__CIKLEK__PAGE_SIZE="10",
        **extra,
    )
    done = run_main("sync", env=env, cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir / "ciklek_warehouse.duckdb", done.stdout


def test_sync_through_every_fault_equals_a_fault_free_sync(
    sandbox_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The point is what is loaded, not how long a retry waits (tests/unit pins the schedule).
    short_backoff(monkeypatch)
    # A 1 s server window keeps every spurious 429's Reset close, so the test stays quick.
    window = ("--window-seconds", 1, "--window-limit", 100_000)
    clean = sandbox_factory(*DATA_FLAGS, *window)
    faulty = sandbox_factory(
        *DATA_FLAGS,
        *window,
        "--error-rate", 0.1, "--drop-rate", 0.1, "--truncate-rate", 0.1, "--rate429", 0.1,
    )  # fmt: skip
    clean_db, _ = sync_into(clean, tmp_path / "clean")
    faulty_db, summary = sync_into(faulty, tmp_path / "faulty", SOURCES__CIKLEK__MAX_ATTEMPTS="12")

    injected = faulty.stats()["faults_injected"]
    for kind in ("error", "drop", "truncate", "rate429"):
        assert injected[kind] >= 1, injected  # every kind of fault really happened
    assert faulty.stats()["requests"] > clean.stats()["requests"]
    assert "answered 429" in summary

    for table in TABLES:
        expected = table_rows(clean_db, table)
        assert expected, table
        assert table_rows(faulty_db, table) == expected, table
    assert query(faulty_db, "select count(*) from ciklek.orders") == [(240,)]


def test_scaled_window_sync_receives_no_429(sandbox_factory: Any, tmp_path: Path) -> None:
    sb = sandbox_factory(
        "--orders", 170, "--customers", 5, "--products", 5,
        "--window-seconds", 2, "--window-limit", 8,
    )  # fmt: skip
    db, summary = sync_into(sb, tmp_path / "run", SOURCES__CIKLEK__RESOURCES="orders")
    stats = sb.stats()
    assert "429" not in stats["by_status"], stats["by_status"]
    # 170 orders in pages of 10: 17 full pages and the empty-cursor end, all answered 200: more
    # than two windows' worth of 8, so the limiter waits for a fresh window at least twice.
    assert stats["by_path"]["/v1/orders"] >= 17
    assert stats["by_status"] == {"200": stats["requests"]}
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(170, 170)]
    assert "(0 answered 429" in summary


def test_retried_post_after_a_lost_201_creates_one_order(sandbox_factory: Any) -> None:
    sb = sandbox_factory("--orders", 20, "--customers", 5, "--products", 5)
    with sb.client() as http:
        customer = http.get("/customers", params={"limit": 1}).json()["data"][0]
        product = http.get("/products", params={"limit": 1}).json()["data"][0]
    before = sb.stats()["counts"]["orders"]
    sb.control_post("faults", json={"post_fail_after_write": 1})

    waits: list[float] = []
    request = {
        "customer_id": customer["id"],
        "currency": "USD",
        "line_items": [{"product_id": product["id"], "quantity": 3}],
    }
    with CiklekClient(sb.url, ApiKey(sb.key), sleep=waits.append) as client:
        order = client.create_order(request)
        by_path = sb.stats()["by_path"]

    stats = sb.stats()
    assert stats["faults_injected"]["post_fail_after_write"] == 1
    assert stats["counts"]["orders"] == before + 1
    assert len(waits) == 1  # one 500, one retry
    assert stats["by_status"].get("500") == 1 and stats["by_status"].get("201") == 1
    assert by_path["/v1/orders"] >= 2
    stored = sb.control_request("GET", f"records/orders/{order['id']}").json()
    assert stored == order
    assert order["customer_id"] == customer["id"]
    assert order["line_items"][0]["quantity"] == 3
    assert order["total"] == order["subtotal"] + order["tax"] == stored["total"]
