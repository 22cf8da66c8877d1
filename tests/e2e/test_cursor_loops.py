"""`ciklek sync` against a hostile loopback server whose cursors loop.

The server is ours, on 127.0.0.1, answers a bounded number of requests and stops with the test:
it serves a valid first page, then cursors that cycle (A -> B -> A) or never end while bringing
no new record. The sync must stop after a handful of requests, say why, and exit 1 like any
broken contract (a cursor that does not advance has always exited 1 with this wording).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from connector.traversal.state import MAX_STALE_PAGES
from tests.inproc import run_main

MAX_REQUESTS = 200  # the server refuses more: a guard that failed cannot spin forever
RECORDS = [
    {"id": f"c{n}", "name": f"C{n}", "email": f"c{n}@x.test", "updated_at": "2026-01-01T00:00:00Z"}
    for n in (1, 2)
]


class _Looping(BaseHTTPRequestHandler):
    kind = "cycle"
    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if len(self.paths) > MAX_REQUESTS:
            self.send_error(500)
            return
        after = parse_qs(urlsplit(self.path).query).get("after", [None])[0]
        if self.kind == "cycle":
            nxt = {None: "A", "A": "B", "B": "A"}[after]
        else:
            nxt = f"fresh-{len(self.paths)}"
        body = json.dumps({"data": RECORDS, "meta": {"total": 2, "next_cursor": nxt}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=["cycle", "endless"])
def looping(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[_Looping]]]:
    handler = type("Handler", (_Looping,), {"kind": request.param, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_looping_cursor_stops_the_sync_after_few_requests(
    looping: tuple[str, type[_Looping]], clean_env: Path
) -> None:
    url, handler = looping
    env = {
        **os.environ,
        "SOURCES__CIKLEK__BASE_URL": url,
        "SOURCES__CIKLEK__API_KEY": "bsk_test_loops",
        "SOURCES__CIKLEK__REQUESTS_PER_MINUTE": "100000",
    }
    result = run_main("sync", "--resources", "customers", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    expected = 3 if handler.kind == "cycle" else 1 + MAX_STALE_PAGES
    assert len(handler.paths) == expected
    code = "cursor_cycle" if handler.kind == "cycle" else "no_new_records"
    assert f"customers: unexpected API error: HTTP 200 {code} on /customers:" in output
    assert "stopped to protect the quota" in output
