"""End to end: the `ciklek` CLI against the real sandbox over HTTP into DuckDB."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

from tests.helpers import DEFAULT_DB, query, run_cli, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess


def test_sync_loads_every_record_and_a_second_sync_adds_no_duplicates(
    sandbox_factory, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory("--orders", 1200, "--customers", 150, "--products", 60)
    env = sync_env(sb)
    first = run_cli("sync", env=env)  # the console script: one whole journey
    assert first.returncode == 0, first.stderr
    db = clean_env / DEFAULT_DB
    counts = sb.stats()["counts"]
    assert counts["orders"] == 1200
    # The analyst's query on the default file works (no catalog/dataset ambiguity).
    assert query(db, "select count(*) from ciklek.orders") == [(1200,)]
    assert query(db, "select count(*) from ciklek.customers") == [(150,)]
    assert query(db, "select count(*) from ciklek.products") == [(60,)]

    # Line items: exactly the items of every order, linked by order_id.
    with sb.client() as http:
        expected_items = 0
        after = None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            body = http.get("/orders", params=params).json()
            expected_items += sum(len(o["line_items"]) for o in body["data"])
            after = body["meta"]["next_cursor"]
            if after is None:
                break
    assert query(db, "select count(*) from ciklek.order_line_items where not _ciklek_deleted") == [
        (expected_items,)
    ]

    # One order field by field against the API's own record.
    order_id = query(db, "select id from ciklek.orders order by id limit 1")[0][0]
    raw = sb.control_request("GET", f"records/orders/{order_id}").json()
    row = query(
        db,
        "select number, customer_id, status, currency, subtotal, tax, total, delivery_date, "
        f"shipped_at, created_at, updated_at from ciklek.orders where id = '{order_id}'",
    )[0]
    assert row[0] == raw["number"]
    assert row[1] == raw["customer_id"]
    assert row[2] == raw["status"]
    assert row[3] == raw["currency"]
    assert row[4] == Decimal(raw["subtotal"]).scaleb(-2)
    assert row[5] == Decimal(raw["tax"]).scaleb(-2)
    assert row[6] == Decimal(raw["total"]).scaleb(-2)
    assert row[7] == (dt.date.fromisoformat(raw["delivery_date"]) if raw["delivery_date"] else None)
    for value, text in (
        (row[8], raw["shipped_at"]),
        (row[9], raw["created_at"]),
        (row[10], raw["updated_at"]),
    ):
        expected = dt.datetime.fromisoformat(text) if text else None
        assert value == expected

    # Second sync: nothing changed, so one request per resource and no duplicates.
    before = sb.stats()["requests"]
    second = run_cli("sync", env=env)
    assert second.returncode == 0, second.stderr
    assert sb.stats()["requests"] - before == 3
    assert query(db, "select count(*), count(distinct id) from ciklek.orders") == [(1200, 1200)]
    assert query(db, "select count(*) from ciklek.order_line_items where not _ciklek_deleted") == [
        (expected_items,)
    ]
    runs = query(
        db, "select outcome, exit_code, requests from ciklek._ciklek_sync_runs order by started_at"
    )
    assert [r[0] for r in runs] == ["completed", "completed"]
    assert runs[1][2] == 3


def test_status_reads_state_without_network(sandbox, clean_env: Path) -> None:
    env = sync_env(sandbox)
    assert run_main("sync", "--resources", "products", env=env).returncode == 0
    sandbox.stop()  # status must not need the API
    result = run_main("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["resources"]["products"]["watermark"] is not None
    assert doc["resources"]["products"]["rows_loaded"] == 50
    assert doc["last_run"]["outcome"] == "completed"
    assert doc["running"] is False
