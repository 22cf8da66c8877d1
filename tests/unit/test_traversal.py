"""The traversal's transitions, page by page (no HTTP, no dlt), and the loop guard end to end.

The state fixture was written by the code before the reshape (tests/fixtures/state_v0.json,
captured from a real run): pipelines already in the field must resume from it.
"""

from __future__ import annotations

import datetime as dt
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
from connector.errors import BrokenPagination
from connector.records.normalize import parse_instant
from connector.runs.compose import ClientLease, SourceSetup
from connector.runs.source import ciklek_source
from connector.traversal.run_config import RunConfig
from connector.traversal.run_report import RunReport
from connector.traversal.state import (
    MAX_STALE_PAGES,
    STATE_VERSION,
    PageFacts,
    ResourceState,
    ResumePoint,
    Traversal,
    accept_page,
    begin,
    finish,
    restart,
    start,
    stop,
)

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "state_v0.json").read_text())
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def plan(**kw: Any) -> dict[str, Any]:
    return {"window": None, "lookback_seconds": 0.0, "full_refresh": False, **kw}


# --- start / resume -----------------------------------------------------------------------


def test_start_picks_full_refresh_incremental_or_resume() -> None:
    assert begin(ResourceState(), **plan()).kind == "full"
    assert begin(ResourceState(rows_loaded=5), **plan()).kind == "incremental"
    assert begin(ResourceState(), **plan(full_refresh=True)).kind == "refresh"
    trav = begin(ResourceState(watermark="2026-01-01T00:10:00Z"), **plan(lookback_seconds=60))
    assert (trav.kind, trav.since, trav.after) == ("incremental", "2026-01-01T00:09:00Z", None)


def test_resume_from_stored_cursor_skips_the_versions_already_loaded() -> None:
    point = ResumePoint("2026-01-01T00:00:00Z", "cur-9", [("a", "2026-01-01T00:05:00Z")])
    state = ResourceState(watermark="2026-01-01T00:05:00Z", resume=point)
    trav = begin(state, **plan())
    assert (trav.kind, trav.after, trav.since, trav.fresh) == (
        "incremental", "cur-9", "2026-01-01T00:00:00Z", False,
    )  # fmt: skip
    assert trav.skip == [("a", "2026-01-01T00:05:00Z")]
    assert state.traversal is trav  # kept in state: the next chunk continues it
    # A lookback re-reads a margin: a stored cursor cannot, so the traversal starts from since.
    assert (
        begin(
            ResourceState(watermark=state.watermark, resume=point), **plan(lookback_seconds=1)
        ).after
        is None
    )


def test_a_window_is_kept_by_its_bounds_and_continued() -> None:
    state = ResourceState()
    window = (at(0), None)
    first = begin(state, **plan(window=window))
    assert list(state.windows) == ["2026-01-01T00:00:00Z|-"]
    assert begin(state, **plan(window=window)) is first
    assert state.traversal is None  # a window never touches the incremental traversal


# --- accept a page ------------------------------------------------------------------------


def test_accept_page_counts_and_moves_to_the_next_cursor() -> None:
    trav = start("full", None)
    done = accept_page(trav, PageFacts("c1", total=50, received=10, furthest=(at(1), "a")))
    assert not done and (trav.after, trav.last_after, trav.pages, trav.total) == ("c1", None, 1, 50)
    assert accept_page(trav, PageFacts(None, total=99, received=7))
    # meta.total is read from the first page only; the last page's cursor is kept for resume
    assert (trav.pages, trav.received, trav.total, trav.last_after) == (2, 17, 50, "c1")


def test_a_page_past_until_completes_a_window() -> None:
    trav = start("window", None, "2026-01-02T00:00:00Z")
    assert accept_page(trav, PageFacts("c1", reached_until=True))


def test_a_cursor_that_does_not_advance_is_a_broken_contract() -> None:
    trav = start("full", None)
    accept_page(trav, PageFacts("A", furthest=(at(1), "a")))
    with pytest.raises(BrokenPagination, match="cursor_not_advancing") as info:
        accept_page(trav, PageFacts("A", furthest=(at(2), "b")))
    assert info.value.endpoint == "" and trav.after == "A" and trav.pages == 2


def test_a_cursor_cycle_stops_at_the_first_repeat() -> None:
    trav = start("full", None)
    accept_page(trav, PageFacts("A", furthest=(at(1), "a")))
    accept_page(trav, PageFacts("B", furthest=(at(2), "b")))
    with pytest.raises(BrokenPagination, match="cursor_cycle"):
        accept_page(trav, PageFacts("A", furthest=(at(3), "c")))


def test_new_cursors_bringing_nothing_new_stop_after_the_stale_limit() -> None:
    trav = start("full", None)
    accept_page(trav, PageFacts("c0", new_ids=True, furthest=(at(1), "a")))
    for n in range(1, MAX_STALE_PAGES):
        accept_page(trav, PageFacts(f"c{n}", new_ids=False, furthest=(at(1), "a")))
    with pytest.raises(BrokenPagination, match="no_new_records"):
        accept_page(trav, PageFacts("last", new_ids=False, furthest=(at(1), "a")))


def test_records_updated_mid_sync_never_trip_the_loop_guard() -> None:
    """Only known ids, page after page (a bulk update reappearing at the end of the list): each
    page still lies further along (updated_at, id), so the traversal goes on."""
    trav = start("full", None)
    for n in range(10 * MAX_STALE_PAGES):
        accept_page(trav, PageFacts(f"c{n}", new_ids=False, furthest=(at(n), "a")))
    assert trav.stale_pages == 0 and trav.pages == 10 * MAX_STALE_PAGES


# --- restart, stop, finish ----------------------------------------------------------------


def test_restart_after_a_rejected_cursor_starts_over_once() -> None:
    state = ResourceState(watermark="2026-01-01T01:00:00Z")
    trav = start("incremental", "2026-01-01T00:00:00Z")
    accept_page(trav, PageFacts("c1", total=9, received=3, furthest=(at(1), "a")))
    assert restart(state, trav, lookback_seconds=600)
    assert (trav.after, trav.since, trav.pages, trav.total, trav.fresh, trav.cursors) == (
        None, "2026-01-01T00:50:00Z", 0, None, True, [],
    )  # fmt: skip
    trav.after = "c2"
    assert not restart(state, trav, lookback_seconds=0)  # once: a second 400 is a real error
    assert not restart(state, start("full", None), lookback_seconds=0)  # no stored cursor


def test_a_cursor_rejected_after_a_page_restarts_again_but_not_one_issued_right_after() -> None:
    state = ResourceState(watermark="2026-01-01T01:00:00Z")
    trav = start("incremental", "2026-01-01T01:00:00Z")
    for n in range(3):
        accept_page(trav, PageFacts(f"c{n}", received=1, furthest=(at(n), f"r{n}")))
    assert restart(state, trav, lookback_seconds=0)  # rotated mid-walk: from the watermark
    assert (trav.after, trav.since, trav.restarts) == (None, "2026-01-01T01:00:00Z", 1)
    for n in range(3):
        accept_page(trav, PageFacts(f"d{n}", received=1, furthest=(at(n), f"r{n}")))
    assert restart(state, trav, lookback_seconds=0)  # rotated again, pages later: again
    accept_page(trav, PageFacts("e0", received=1, furthest=(at(0), "r0")))
    assert restart(state, trav, lookback_seconds=0)  # the first cursor after it: once more
    accept_page(trav, PageFacts("f0", received=1, furthest=(at(0), "r0")))
    # The first cursor issued after a restart refused twice in a row: the server refuses every
    # cursor, and restarting would spend the day's quota one page at a time.
    assert not restart(state, trav, lookback_seconds=0)
    assert Traversal.from_json(trav.to_json()).early_rejections == 1  # kept across runs


def test_stop_keeps_the_newest_updated_at_only() -> None:
    trav = start("full", None)
    stop(trav, at(5))
    stop(trav, at(2))
    stop(trav, None)
    assert trav.max_seen == "2026-01-01T00:05:00Z"


def test_finish_moves_the_watermark_and_keeps_the_resume_point() -> None:
    state = ResourceState(watermark="2026-01-01T00:03:00Z")
    trav = begin(state, **plan())
    accept_page(trav, PageFacts("c1", furthest=(at(4), "a")))
    accept_page(trav, PageFacts(None))
    stop(trav, at(4))
    finish(state, trav, [("a", "2026-01-01T00:04:00Z")])
    assert state.watermark == "2026-01-01T00:04:00Z" and state.traversal is None
    assert state.resume == ResumePoint(
        "2026-01-01T00:03:00Z", "c1", [("a", "2026-01-01T00:04:00Z")]
    )
    assert state.last_traversal is not None and state.last_traversal["pages"] == 2


def test_finish_of_a_window_leaves_the_watermark_alone() -> None:
    state = ResourceState(watermark="2026-01-01T00:03:00Z")
    trav = begin(state, **plan(window=(at(0), at(60))))
    stop(trav, at(30))
    finish(state, trav, [])
    assert state.windows == {} and state.watermark == "2026-01-01T00:03:00Z"
    assert state.last_window is not None and state.last_window["until"] == "2026-01-01T01:00:00Z"


# --- state written by the code before the reshape -----------------------------------------


def test_state_written_by_the_old_code_reads_with_every_field() -> None:
    raw = FIXTURE["resources"]
    customers = ResourceState.load(raw["customers"])
    assert customers.watermark == "2026-01-03T00:00:11Z" and customers.rows_loaded == 13
    assert customers.resume is not None and customers.resume.after == "8"
    assert customers.resume.last_page[0] == ("c008", "2026-01-03T00:00:08Z")
    trav = customers.traversal
    assert trav is not None and (trav.kind, trav.after, trav.last_after, trav.fresh) == (
        "incremental", "12", "8", False,
    )  # fmt: skip
    assert len(trav.skip) == 4 and trav.max_seen == "2026-02-01T00:00:00Z"
    orders = ResourceState.load(raw["orders"])
    assert orders.traversal is not None and (orders.traversal.pages, orders.traversal.total) == (
        2,
        12,
    )
    products = ResourceState.load(raw["products"])
    assert list(products.windows) == ["2026-01-02T00:00:00Z|-"]
    assert (
        products.last_window is not None and products.last_window["until"] == "2026-01-02T00:00:00Z"
    )
    # Written back as plain JSON with a version, and read again to the same value.
    dumped = json.loads(json.dumps(customers.dump()))
    assert dumped["version"] == STATE_VERSION
    assert ResourceState.load(dumped) == customers


def _fixture_server(seen: list[httpx.Request]) -> httpx.MockTransport:
    """The fake API the fixture was captured against: offset cursors, updated_since filter."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        records = FIXTURE["data"][request.url.path.rsplit("/", 1)[-1]]
        since = request.url.params.get("updated_since")
        if since:
            bound = parse_instant(since)
            records = [r for r in records if parse_instant(r["updated_at"]) >= bound]
        offset, limit = int(request.url.params.get("after") or 0), int(request.url.params["limit"])
        nxt = str(offset + limit) if offset + limit < len(records) else None
        body = {
            "data": records[offset : offset + limit],
            "meta": {"total": len(records), "next_cursor": nxt},
        }
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


@dlt.source(name="ciklek")
def _old_state() -> list[Any]:
    """Plants the fixture's resource states in a pipeline, as the old code left them."""

    def plant(name: str) -> Any:
        def gen() -> Any:
            dlt.current.resource_state().update(json.loads(json.dumps(FIXTURE["resources"][name])))
            yield from ()

        return dlt.resource(gen, name=name)

    return [plant(name) for name in FIXTURE["resources"]]


def _pipeline(tmp_path: Path) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name="edges",
        destination=dlt.destinations.duckdb(str(tmp_path / "edges.duckdb")),
        dataset_name="ciklek",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def _run(client: CiklekClient, names: list[str], **config: Any) -> SourceSetup:
    return SourceSetup(
        CATALOGUE,
        names,
        ClientLease.borrowed(client),
        RunConfig(page_size=4, **config),
        RunReport(),
    )


def test_pipelines_with_old_state_resume_from_their_stored_cursors(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    pipeline.run(_old_state())
    seen: list[httpx.Request] = []
    client = CiklekClient(
        "https://api.test/v1", ApiKey("bsk_test_f"), transport=_fixture_server(seen)
    )
    run = _run(client, ["customers", "orders"])
    pipeline.run(ciklek_source(setup=run))
    window = (parse_instant("2026-01-02T00:00:00Z"), None)
    pipeline.run(ciklek_source(setup=_run(client, ["products"], window=window)))
    # Each traversal continued where the old code stopped it: one request each, no restart.
    assert [(r.url.path, r.url.params.get("after")) for r in seen] == [
        ("/v1/customers", "12"), ("/v1/orders", "8"), ("/v1/products", "4"),
    ]  # fmt: skip
    assert run.report.outcome("customers").done and run.report.outcome("orders").done
    state = pipeline.state["sources"]["ciklek"]["resources"]
    customers = ResourceState.load(state["customers"])
    assert customers.traversal is None and customers.watermark == "2026-02-04T00:00:00Z"
    assert customers.rows_loaded == 13 + 4
    assert ResourceState.load(state["orders"]).watermark == "2026-01-03T00:00:11Z"
    assert ResourceState.load(state["products"]).windows == {}
    with duckdb.connect(str(tmp_path / "edges.duckdb"), read_only=True) as con:
        ids = [r[0] for r in con.sql("select id from ciklek.orders order by id").fetchall()]
    assert ids == ["o008", "o009", "o010", "o011"]  # only the page the old run had not loaded


# --- hostile pagination through the source ------------------------------------------------


def _hostile(kind: str, seen: list[httpx.Request]) -> CiklekClient:
    records = [{"id": f"c{n}", "name": "x", "updated_at": "2026-01-01T00:00:00Z"} for n in (1, 2)]
    cycle = {None: "A", "A": "B", "B": "A"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert len(seen) < 100, "the guard did not stop the traversal"
        after = request.url.params.get("after")
        nxt = cycle[after] if kind == "cycle" else f"fresh-{len(seen)}"
        return httpx.Response(200, json={"data": records, "meta": {"next_cursor": nxt}})

    return CiklekClient(
        "https://api.test/v1", ApiKey("bsk_test_h"), transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(("kind", "requests", "code"), [
    ("cycle", 3, "cursor_cycle"),
    ("endless", 1 + MAX_STALE_PAGES, "no_new_records"),
])  # fmt: skip
def test_a_looping_server_is_stopped_after_few_requests_even_across_chunks(
    tmp_path: Path, kind: str, requests: int, code: str
) -> None:
    seen: list[httpx.Request] = []
    run = _run(_hostile(kind, seen), ["customers"], chunk_pages=2)
    pipeline = _pipeline(tmp_path)
    for _ in range(20):  # one load per chunk, as `ciklek sync` does
        pipeline.run(ciklek_source(setup=run))
        if run.report.outcome("customers").finished:
            break
    error = run.report.outcome("customers").error
    assert isinstance(error, BrokenPagination) and error.code == code
    assert len(seen) == requests
    with duckdb.connect(str(tmp_path / "edges.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from ciklek.customers").fetchall() == [(2,)]
