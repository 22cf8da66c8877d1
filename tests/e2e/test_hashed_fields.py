"""`hash_fields`: a listed field's clear value is written nowhere the connector writes (tables,
`_ciklek_rejects.raw_json`, the state dir with dlt's load packages, the run's output); equal values
hash equal across runs and records; a missing key is exit 2 before any request.

The byte searches carry their own control: an unhashed field's values (`company`) are found by
the same search, so a search that cannot see text at all would fail the test instead of passing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEFAULT_DB, query, sync_env
from tests.inproc import run_main
from tests.sandbox_proc import SandboxProcess

KEY = "tests-hash-key-7c2f0a9d41"
HASHED = "customers.email,customers.name"


def keyed(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def listed_customers(sb: SandboxProcess) -> list[dict[str, Any]]:
    """Every customer the list serves, bad ones (a missing id) included."""
    records: list[dict[str, Any]] = []
    after = None
    with sb.client() as http:
        while True:
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            body = http.get("/customers", params=params).json()
            records += body["data"]
            after = body["meta"]["next_cursor"]
            if after is None:
                return records


def blobs_under(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def clear_values_found(values: list[str], blobs: list[bytes]) -> list[str]:
    return [v for v in values if any(v.encode() in blob for blob in blobs)]


def hashed_env(sb: SandboxProcess, **extra: str) -> dict[str, str]:
    return sync_env(sb, SOURCES__CIKLEK__HASH_FIELDS=HASHED, SOURCES__CIKLEK__HASH_KEY=KEY, **extra)


def test_no_email_or_name_in_clear_in_duckdb_state_or_output_and_hashes_are_stable(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = sandbox_factory("--orders", 30, "--customers", 90, "--products", 10, "--bad-records", 0.1)
    env = hashed_env(sb)
    first = run_main("sync", env=env)
    assert first.returncode == 0, first.stderr
    customers = listed_customers(sb)
    db = clean_env / DEFAULT_DB
    rejects = query(
        db,
        "select record_id, raw_json from ciklek._ciklek_rejects where resource = 'customers'",
    )
    assert rejects, "the sandbox's bad customers were expected among the rejects"
    rejected = {rid for rid, _ in rejects}
    good = {c["id"]: c for c in customers if c.get("id") and c["id"] not in rejected}
    rows = {r[0]: (r[1], r[2]) for r in query(db, "select id, email, name from ciklek.customers")}
    assert rows == {rid: (keyed(c["email"]), keyed(c["name"])) for rid, c in good.items()}
    hashes = {keyed(c["email"]): c["email"] for c in customers}
    for rid, raw in rejects:
        record = json.loads(raw)
        assert record["email"] in hashes  # the quarantined record holds the hash
        if rid is not None:
            assert (
                hashes[record["email"]] == next(c for c in customers if c.get("id") == rid)["email"]
            )

    # Two customers with one address hash alike; a re-fetched customer keeps its hash.
    a, b, *_ = sorted(good)
    sb.control_request(
        "PATCH", f"records/customers/{b}", json={"email": good[a]["email"]}
    ).raise_for_status()
    sb.control_post("mutate", resource="customers", update=10)
    second = run_main("sync", env=env)
    assert second.returncode == 0, second.stderr
    [(written,)] = query(
        db, "select rows from ciklek._ciklek_sync_runs order by started_at desc limit 1"
    )
    assert written >= 11  # the ten updated customers and `b` were fetched and written again
    after = {r[0]: r[1] for r in query(db, "select id, email from ciklek.customers")}
    assert after[b] == after[a] == keyed(good[a]["email"])
    assert all(after[rid] == rows[rid][0] for rid in rows if rid != b)

    emails = [c["email"] for c in customers] + [c["name"] for c in customers]
    blobs = [
        db.read_bytes(),
        *blobs_under(
            Path(env["CIKLEK_HOME"]) if "CIKLEK_HOME" in env else clean_env.parent / "ciklek-home"
        ),
    ]
    for done in (first, second):
        blobs += [done.stdout.encode(), done.stderr.encode()]
    assert clear_values_found(emails, blobs) == []
    companies = [c["company"] for c in good.values() if c.get("company")]
    assert companies and clear_values_found(companies, [db.read_bytes()]) == companies


def test_a_missing_hash_key_is_exit_2_with_zero_requests(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb = sandbox_factory("--orders", 5, "--customers", 5, "--products", 5)
    env = sync_env(sb, SOURCES__CIKLEK__HASH_FIELDS=HASHED)
    for command in (("sync",), ("sweep",)):
        done = run_main(*command, env=env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "hash_key" in lines[0] and "Traceback" not in done.stderr
    assert sb.stats()["requests"] == 0
    assert not (clean_env / DEFAULT_DB).exists()


@pytest.mark.postgres
def test_no_email_in_clear_in_postgresql(sandbox_factory: Any, pg_schema: tuple[str, str]) -> None:
    import psycopg2

    dsn, schema = pg_schema
    sb = sandbox_factory("--orders", 20, "--customers", 60, "--products", 10, "--bad-records", 0.1)
    env = hashed_env(sb, DESTINATION__POSTGRES__CREDENTIALS=dsn)
    done = run_main("sync", "--destination", "postgres", "--dataset", schema, env=env)
    assert done.returncode == 0, done.stderr
    texts: list[bytes] = []
    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute(
            "select table_name from information_schema.tables where table_schema = %s", (schema,)
        )
        for (table,) in cur.fetchall():
            cur.execute(f'select row_to_json(t)::text from "{schema}"."{table}" t')
            texts += [row[0].encode() for row in cur.fetchall()]
    customers = listed_customers(sb)
    assert clear_values_found([c["email"] for c in customers], texts) == []
    companies = [c["company"] for c in customers if c.get("company")]
    assert clear_values_found(companies, texts) == companies  # the search sees text
    assert keyed(customers[0]["email"]).encode() in b"".join(texts)
