"""Issue 16's small parts: base-URL hints, retry/wait events, one timestamp and number format,
the run's own progress estimate, and the summary's dedup of messages."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from connector.api.ledger import RequestLog
from connector.cli.tables import _once
from connector.errors import CiklekUnavailable, WrongBaseUrl
from connector.runs.events import EventLog, num
from connector.runs.progress import ProgressReporter
from connector.timefmt import stamp
from connector.traversal.run_report import ResourceOutcome
from tests.unit.fake_time import FakeTime
from tests.unit.test_client import BASE, api_error, make_client, ok


def _events(sink: list[tuple[str, dict[str, object]]]):  # type: ignore[no-untyped-def]
    def on_event(event: str, fields: Mapping[str, object]) -> None:
        sink.append((event, dict(fields)))

    return on_event


def test_a_404_on_a_list_is_a_wrong_base_url_after_one_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return api_error(404, "not_found", "Route not found")

    with make_client(handler, FakeTime()) as client, pytest.raises(WrongBaseUrl) as info:
        client.fetch_page("orders", limit=1)
    assert len(seen) == 1
    assert str(info.value) == (
        f"/orders answered 404: is `base_url` right? it should end in /v1: {BASE}"
    )


def test_a_web_page_answering_200_is_a_wrong_base_url_not_retried() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, text="<html>Welcome to Ciklek</html>", headers={"content-type": "text/html"}
        )

    with make_client(handler, FakeTime()) as client, pytest.raises(WrongBaseUrl) as info:
        client.fetch_page("orders", limit=1)
    assert len(seen) == 1
    assert "it should end in /v1" in str(info.value)


def test_retries_and_waits_are_told_before_they_happen_with_the_url() -> None:
    ft = FakeTime()
    replies = iter(
        [
            httpx.Response(503, text="busy"),
            api_error(429, "rate_limited", headers={"X-RateLimit-Reset": str(int(ft.clock()) + 5)}),
            ok(),
        ]
    )
    told: list[tuple[str, dict[str, object]]] = []
    with make_client(lambda _r: next(replies), ft, on_event=_events(told)) as client:
        client.fetch_page("orders", limit=1)
    assert [e for e, _ in told] == ["retry", "wait"]
    retry, wait = told[0][1], told[1][1]
    assert retry["url"] == f"{BASE}/orders" and retry["attempt"] == 2
    assert retry["reason"] == "HTTP 503"
    assert wait["reason"] == "rate_limited"
    # Told before sleeping, with the very waits that were slept: back-off, then to the Reset.
    assert ft.sleeps == [retry["seconds"], wait["seconds"]] == [0.5, 4.5]


def test_an_unreachable_host_names_the_url_and_promises_nothing_about_progress() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    told: list[tuple[str, dict[str, object]]] = []
    client = make_client(handler, FakeTime(), max_attempts=3, on_event=_events(told))
    with client, pytest.raises(CiklekUnavailable) as info:
        client.fetch_page("orders", limit=1)
    assert [e for e, _ in told] == ["retry", "retry"]
    assert str(info.value).startswith(f"{BASE}/orders still failing after 3 attempts")
    assert "progress" not in str(info.value)


def test_one_timestamp_format_and_one_thousands_style() -> None:
    at = dt.datetime(2026, 11, 29, 16, 23, 23, 538300, tzinfo=dt.UTC)
    assert stamp(at) == "2026-11-29T16:23:23.538300Z"
    assert stamp(str(at)) == stamp(at)  # `2026-11-29 16:23:23.538300+00:00` read back
    assert stamp("2026-11-29T17:23:23+01:00") == "2026-11-29T16:23:23Z"
    assert stamp(dt.datetime(2026, 11, 30)) == "2026-11-30T00:00:00Z"
    assert (num(47441), num(12.5), num(3.0)) == ("47,441", "12.5", "3")


def test_json_events_carry_ts_run_id_and_event() -> None:
    stream = io.StringIO()
    EventLog("json", "abc", stream=stream).emit("wait", {"seconds": 4.8})
    doc = json.loads(stream.getvalue())
    assert doc["run_id"] == "abc" and doc["event"] == "wait" and doc["seconds"] == 4.8
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    text = io.StringIO()
    EventLog("text", stream=text).emit("wait", {"reason": "rate_limit_window", "seconds": 4.8})
    assert text.getvalue() == "waiting 4.8 s for the rate-limit window\n"


def test_progress_estimates_this_runs_pages_from_where_its_cursor_continues() -> None:
    reporter = ProgressReporter(
        ["orders"], page_size=25, log=RequestLog(), quota=None, tty=False, stream=io.StringIO()
    )
    # 120 records (5 pages), the run continues at page 6 (after the previous traversal's end).
    resumed = ResourceOutcome(pages=1, new_records=3, total=120, traversal_pages=1, first_page=6)
    assert reporter.pages_total(resumed) == 1
    # A traversal that a quota stop cut after 2 pages continues at page 3: 3 pages left.
    cut = ResourceOutcome(pages=1, total=120, traversal_pages=3, first_page=3)
    assert reporter.pages_total(cut) == 3
    fresh = ResourceOutcome(pages=2, total=120, traversal_pages=2, first_page=1)
    assert reporter.pages_total(fresh) == 5


def test_each_message_once() -> None:
    messages = [
        "the API key was refused (401 unauthorized): check ...",
        "the API key was refused (401 unauthorized): check ...",
        "stopped early: daily quota exhausted on /orders; resume after 2026-11-30T00:00:00Z",
        "resume after 2026-11-30T00:00:00Z",
        "progress is kept: the next run continues where this one stopped",
    ]
    assert _once(messages) == [messages[0], messages[2], messages[4]]


def test_query_reads_the_flag_else_the_read_copy_else_the_last_runs_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.runs.status_file import write_status
    from connector.runs.target import query_target

    monkeypatch.setenv("CIKLEK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    # Nothing known: the file a sync from here would write.
    assert query_target("ciklek", None) == (tmp_path / "ciklek_warehouse.duckdb", "ciklek")
    last = {"last_run": {"duckdb_path": "/srv/a/w.duckdb"}, "dataset": "shop"}
    write_status(tmp_path / "home", "ciklek", last)
    assert query_target("ciklek", None) == (Path("/srv/a/w.duckdb"), "shop")
    monkeypatch.setenv("SOURCES__CIKLEK__DUCKDB_READ_COPY", str(tmp_path / "copy.duckdb"))
    assert query_target("ciklek", None) == (tmp_path / "copy.duckdb", "shop")
    assert query_target("ciklek", "x.duckdb") == (tmp_path / "x.duckdb", "shop")


def test_every_sandbox_flag_has_help_and_a_row_in_the_sandbox_page() -> None:
    from connector.sandbox.server import parser

    sandbox = parser()
    assert sandbox.prog == "ciklek sandbox"
    page = (Path(__file__).resolve().parents[2] / "docs" / "sandbox.md").read_text()
    for action in sandbox._actions:
        if action.dest == "help":
            continue
        assert action.help, action.option_strings
        assert f"| `{action.option_strings[0]}" in page, action.option_strings
