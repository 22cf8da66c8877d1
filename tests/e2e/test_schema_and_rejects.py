"""End to end: warehouse column types, quarantined records, excluded fields, money migration."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.catalogue import CATALOGUE
from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

SMALL = ("--orders", 300, "--customers", 60, "--products", 30, "--window-limit", 1_000_000)


def fast(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    env = sync_env(sb)
    env.update(SOURCES__CIKLEK__PAGE_SIZE="50", SOURCES__CIKLEK__REQUESTS_PER_MINUTE="1000000")
    env.update(extra)
    return env


def column_types(db: Path, schema: str = "ciklek") -> dict[tuple[str, str], str]:
    rows = query(
        db,
        "select table_name, column_name, data_type from information_schema.columns "
        f"where table_schema = '{schema}'",
    )
    return {(table, column): kind for table, column, kind in rows}


def api_records(sb: SandboxProcess, resource: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    after = None
    with sb.client() as http:
        while True:
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            body = http.get(f"/{resource}", params=params).json()
            records += body["data"]
            after = body["meta"]["next_cursor"]
            if after is None:
                return records


def test_every_documented_and_undocumented_column_has_its_declared_type(
    sandbox_factory, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL)
    done = run_main("sync", env=fast(sb))
    assert done.returncode == 0, done.stderr
    types = column_types(clean_env / DEFAULT_DB)

    expected: dict[tuple[str, str], str] = {}
    kinds = {"money": "DECIMAL(38,2)", "timestamp": "TIMESTAMP WITH TIME ZONE", "date": "DATE"}
    for spec in CATALOGUE.values():
        tables = [(spec.name, spec.fields)]
        if spec.child is not None:
            tables.append((spec.child.table, spec.child.fields))
        for table, fields in tables:
            for f in fields:
                if f.kind in kinds:
                    expected[(table, f.name)] = kinds[f.kind]
    assert ("orders", "delivery_date") in expected
    assert ("order_line_items", "unit_price") in expected
    assert ("customers", "credit_limit") in expected
    assert {key: types.get(key) for key in expected} == expected

    # Fields the API sends but the catalogue does not document still arrive, as text.
    documented = {
        "orders": {f.name for f in CATALOGUE["orders"].fields} | {"line_items"},
        "customers": {f.name for f in CATALOGUE["customers"].fields},
        "products": {f.name for f in CATALOGUE["products"].fields},
    }
    undocumented = {
        (resource, key)
        for resource, names in documented.items()
        for record in api_records(sb, resource)
        for key in record
        if key not in names
    }
    # The sandbox's drifting ext_ref (int on some records, string on others), channel, meta, tier.
    assert {("orders", "ext_ref"), ("orders", "channel"), ("customers", "tier")} <= undocumented
    assert {key: types.get(key) for key in undocumented} == dict.fromkeys(undocumented, "VARCHAR")
    ints = query(
        clean_env / DEFAULT_DB,
        "select count(*) from ciklek.orders where regexp_matches(ext_ref, '^[0-9]+$')",
    )
    assert ints[0][0] > 0  # integer values kept as their digits, next to the "X..." strings


def test_bad_records_are_quarantined_and_the_rest_loads(sandbox_factory, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL, "--bad-records", 0.05)
    bad = sb.stats()["bad_records"]
    assert {b["kind"] for b in bad} >= {"money_string", "missing_id"}
    started = dt.datetime.now(dt.UTC)
    done = run_main("sync", env=fast(sb))
    assert done.returncode == 0, done.stderr
    db = clean_env / DEFAULT_DB

    # The good records are all there, and none of the bad ones.
    for resource in ("orders", "customers", "products"):
        served = {r["id"] for r in api_records(sb, resource) if "id" in r}
        bad_ids = {b["id"] for b in bad if b["resource"] == resource}
        loaded = {r[0] for r in query(db, f"select id from ciklek.{resource}")}
        assert loaded == served - bad_ids, resource
    bad_orders = {b["id"] for b in bad if b["resource"] == "orders"}
    listed = ", ".join(f"'{i}'" for i in bad_orders)
    assert query(
        db, f"select count(*) from ciklek.order_line_items where order_id in ({listed})"
    ) == [(0,)]

    # One row per bad record, with resource, id (when it has one), reason, raw JSON, seen_at.
    rows = query(
        db, "select resource, record_id, reason, raw_json, seen_at from ciklek._ciklek_rejects"
    )
    assert len(rows) == len(bad)
    reasons = {
        "money_string": "money must be integer cents, got str",
        "money_float": "money must be integer cents, got float",
        "bad_timestamp": "created_at: timestamp",
        "line_item_price_string": "line_items[0].unit_price: money must be integer cents",
        "missing_id": "id is missing",
    }
    with_id = {(r[0], r[1]): r for r in rows if r[1] is not None}
    for b in bad:
        if b["kind"] == "missing_id":
            continue
        resource, record_id, reason, raw_json, seen_at = with_id[(b["resource"], b["id"])]
        assert reasons[b["kind"]] in reason, (b, reason)
        assert json.loads(raw_json)["id"] == record_id
        assert started - dt.timedelta(seconds=5) <= seen_at <= dt.datetime.now(dt.UTC)
    missing = [r for r in rows if r[1] is None]
    assert len(missing) == sum(b["kind"] == "missing_id" for b in bad)
    assert all(r[2] == "id is missing" and "id" not in json.loads(r[3]) for r in missing)

    # The summary says how many were quarantined, per resource.
    for resource in ("orders", "customers", "products"):
        count = sum(b["resource"] == resource for b in bad)
        if count:
            assert f"rejects {resource}: {count} record(s) quarantined" in done.stdout + done.stderr
    runs = query(db, "select outcome, exit_code, rejects from ciklek._ciklek_sync_runs")
    assert runs == [("completed", 0, len(bad))]

    # Nothing changed: the next run re-reads only the last page and quarantines nothing again
    # (records without an id included), so even --strict passes.
    again = run_main("sync", "--strict", env=fast(sb))
    assert again.returncode == 0, again.stdout + again.stderr
    assert query(db, "select count(*) from ciklek._ciklek_rejects") == [(len(bad),)]

    # --strict: the same data is loaded, but the run exits 4.
    other = clean_env / "strict"
    other.mkdir()
    env = fast(sb, CIKLEK_HOME=str(other / "home"))
    strict = run_main("sync", "--strict", env=env, cwd=other)
    assert strict.returncode == 4, strict.stderr
    assert query(other / DEFAULT_DB, "select count(*) from ciklek.orders") == query(
        db, "select count(*) from ciklek.orders"
    )
    assert query(other / DEFAULT_DB, "select outcome, exit_code from ciklek._ciklek_sync_runs") == [
        ("completed_with_rejects", 4)
    ]


def test_excluded_field_never_reaches_the_warehouse(sandbox_factory, clean_env: Path) -> None:
    sb: SandboxProcess = sandbox_factory(*SMALL, "--bad-records", 0.1)
    env = fast(sb, SOURCES__CIKLEK__EXCLUDE_FIELDS="customers.email")
    done = run_main("sync", "--resources", "customers", env=env)
    assert done.returncode == 0, done.stderr
    db = clean_env / DEFAULT_DB
    for schema in ("ciklek", "ciklek_staging"):
        assert not [k for k in column_types(db, schema) if k[1] == "email"]
    assert query(db, "select count(*) from ciklek.customers")[0][0] > 40
    assert query(db, "select count(*) from ciklek.customers where name is not null")[0][0] > 40
    # Quarantined customers keep their raw JSON, but without the excluded field.
    raw = [r[0] for r in query(db, "select raw_json from ciklek._ciklek_rejects")]
    assert raw and all("@example.com" not in text and '"email"' not in text for text in raw)
    with open(db, "rb") as handle:
        assert b"@example.com" not in handle.read()


def test_money_field_added_later_is_refused_then_migrated_by_full_refresh(
    sandbox_factory, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory(
        "--orders", 120, "--customers", 10, "--products", 10, "--window-limit", 1_000_000
    )
    ids = sorted(r["id"] for r in api_records(sb, "orders"))
    fees = {ids[0]: 500, ids[1]: 1999, ids[2]: -250}
    for rid, fee in fees.items():
        response = sb.control_request("PATCH", f"records/orders/{rid}", json={"shipping_fee": fee})
        assert response.status_code == 200
    env = fast(sb)
    db = clean_env / DEFAULT_DB
    first = run_main("sync", "--resources", "orders", env=env)
    assert first.returncode == 0, first.stderr
    # Undocumented, so it lands as text (an unknown field can never break a sync).
    assert column_types(db)[("orders", "shipping_fee")] == "VARCHAR"
    assert dict(
        query(db, "select id, shipping_fee from ciklek.orders where shipping_fee is not null")
    ) == {rid: str(fee) for rid, fee in fees.items()}

    # Declaring it money now must not leave it silently as text: refused, before any request.
    money = {**env, "SOURCES__CIKLEK__MONEY_FIELDS": "orders.shipping_fee"}
    before = sb.stats()["requests"]
    refused = run_main("sync", "--resources", "orders", env=money)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = refused.stderr + refused.stdout
    assert "orders.shipping_fee" in message
    assert "--full-refresh" in message
    assert sb.stats()["requests"] == before
    assert column_types(db)[("orders", "shipping_fee")] == "VARCHAR"

    # An integer column re-declared as money is refused the same way.
    items = {**env, "SOURCES__CIKLEK__MONEY_FIELDS": "order_line_items.quantity"}
    refused_items = run_main("sync", "--resources", "orders", env=items)
    assert refused_items.returncode == 2
    assert "order_line_items.quantity" in refused_items.stderr + refused_items.stdout

    migrated = run_main("sync", "--resources", "orders", "--full-refresh", env=money)
    assert migrated.returncode == 0, migrated.stderr
    types = column_types(db)
    assert types[("orders", "shipping_fee")] == "DECIMAL(38,2)"
    assert dict(
        query(db, "select id, shipping_fee from ciklek.orders where shipping_fee is not null")
    ) == {rid: Decimal(fee).scaleb(-2) for rid, fee in fees.items()}
    assert query(db, "select count(*) from ciklek.orders") == [(120,)]
    served_items = sum(len(r["line_items"]) for r in api_records(sb, "orders"))
    assert query(db, "select count(*) from ciklek.order_line_items where not _ciklek_deleted") == [
        (served_items,)
    ]
    # And the next plain sync with the setting is accepted.
    again = run_main("sync", "--resources", "orders", env=money)
    assert again.returncode == 0, again.stderr
