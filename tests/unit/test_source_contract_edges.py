"""The source against a MockTransport API that bends the contract (review findings).

No sandbox here: these servers misbehave in ways our sandbox never does (HTML 401s, unordered
lists, a cursor that never advances, odd field types), which is the point: the connector must
hold up against an independent implementation of the contract, not only against ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dlt
import duckdb
import httpx
import pytest

from connector.api.client import CiklekClient
from connector.catalogue import CATALOGUE
from connector.config.redaction import ApiKey
from connector.config.settings import load_settings
from connector.errors import ContractViolation, Unauthorized
from connector.records.normalize import parse_instant
from connector.runs.compose import ClientLease, SourceSetup
from connector.runs.source import ciklek_source
from connector.timefmt import iso
from connector.traversal.run_config import RunConfig
from connector.traversal.run_report import RunReport

KEY = ApiKey("bsk_test_edges")


def customer(n: int, updated_at: Any) -> dict[str, Any]:
    return {"id": f"c{n}", "name": f"C{n}", "email": f"c{n}@x.test", "updated_at": updated_at}


def list_server(records: list[dict[str, Any]], page_size: int = 2, *, stuck: bool = False):
    """Serves `records` in the given order (not sorted!), cursor = offset."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        offset = int(request.url.params.get("after") or 0)
        chunk = records[offset : offset + page_size]
        following = offset + page_size
        nxt = str(offset if stuck else following) if following < len(records) else None
        body = {"data": chunk, "meta": {"total": len(records), "next_cursor": nxt}}
        return httpx.Response(200, json=body)

    return handler, seen


def sync(tmp_path: Path, handler: Any, **config: Any) -> tuple[RunReport, Path]:
    client = CiklekClient(
        "https://api.test/v1", KEY, transport=httpx.MockTransport(handler), sleep=lambda s: None
    )
    config.setdefault("page_size", 2)
    run = SourceSetup(
        CATALOGUE, ["customers"], ClientLease.borrowed(client), RunConfig(**config), RunReport()
    )
    db = tmp_path / "edges.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="edges",
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name="ciklek",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    pipeline.run(ciklek_source(setup=run))
    return run.report, db


def ids(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [r[0] for r in con.sql("select id from ciklek.customers order by id").fetchall()]


def test_a_window_keeps_records_behind_one_past_until_on_the_same_page(tmp_path: Path) -> None:
    records = [
        customer(1, "2026-01-01T00:00:00Z"),
        customer(5, "2026-01-05T00:00:00Z"),
        customer(2, "2026-01-02T00:00:00Z"),
        customer(3, "2026-01-03T00:00:00Z"),
    ]
    records.append(customer(6, "2026-01-06T00:00:00Z"))  # a second page, past --until
    handler, seen = list_server(records, page_size=4)
    window = (None, parse_instant("2026-01-04T00:00:00Z"))
    run, db = sync(tmp_path, handler, window=window, page_size=4)
    # c5 is past --until, but c2 and c3 behind it on the same page still load; the window
    # ends with the first page whose last record is past --until (page 2 here), not before.
    assert ids(db) == ["c1", "c2", "c3"]
    assert [r.url.params.get("after") for r in seen] == [None, "4"]
    assert run.outcome("customers").done
    # A window's meta.total counts records past --until: no false reconciliation alarm.
    assert run.outcome("customers").reconciliation is None


def test_a_cursor_that_never_advances_stops_instead_of_spending_the_quota(tmp_path: Path) -> None:
    records = [customer(n, f"2026-01-0{n}T00:00:00Z") for n in range(1, 6)]
    handler, seen = list_server(records, stuck=True)
    run, _ = sync(tmp_path, handler)
    error = run.outcome("customers").error
    # A broken contract, not an API error: the exit code and message stay those of today.
    assert isinstance(error, ContractViolation) and error.code == "cursor_not_advancing"
    assert str(error) == (
        "HTTP 200 cursor_not_advancing on /customers: next_cursor did not advance (the API "
        "returned the cursor it was sent); stopped to protect the quota"
    )
    assert len(seen) == 2  # the first page, then the same cursor once: stop


def test_a_list_valued_updated_at_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    records = [customer(1, "2026-01-01T00:00:00Z"), customer(2, ["2026-01-02T00:00:00Z"])]
    handler, _ = list_server(records)
    run, db = sync(tmp_path, handler)
    assert ids(db) == ["c1"]
    assert run.outcome("customers").rejects == 1
    with duckdb.connect(str(db), read_only=True) as con:
        reason = con.sql("select record_id, reason from ciklek._ciklek_rejects").fetchall()
    assert reason[0][0] == "c2" and "updated_at" in reason[0][1]


def test_data_null_is_an_empty_page(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": None, "meta": {"next_cursor": None}})

    run, _ = sync(tmp_path, handler)
    assert run.outcome("customers").done and run.outcome("customers").error is None


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [(401, b"<html>Unauthorized</html>", "text/html"), (401, b"", "text/plain")],
)
def test_a_non_json_401_is_unauthorized_at_once(
    status: int, body: bytes, content_type: str
) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    client = CiklekClient(
        "https://api.test/v1", KEY, transport=httpx.MockTransport(handler), sleep=lambda s: None
    )
    with pytest.raises(Unauthorized):
        client.fetch_page("customers", limit=1)
    assert calls == [1]


def test_a_key_pasted_with_a_newline_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__API_KEY", "bsk_live_abc123\n")
    assert load_settings().require_key().reveal() == "bsk_live_abc123"
    monkeypatch.setenv("SOURCES__CIKLEK__API_KEY", "bsk_live abc")
    with pytest.raises(Exception, match="whitespace"):
        load_settings()


def test_watermark_written_as_utc_instant() -> None:
    assert iso(parse_instant("2026-03-15T14:30:00+05:30")) == "2026-03-15T09:00:00Z"
    assert json.loads(json.dumps(iso(parse_instant("2026-03-15T09:00:00.5Z")))) == (
        "2026-03-15T09:00:00.500000Z"
    )
