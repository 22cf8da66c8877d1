"""The `ciklek` CLI against a hostile server on loopback (issue 15).

Each test reproduces one finding of the audit with `tests.hostile_server.HostileServer` and
asserts the outcome the issue asks for: where the key must not go, what must stay bounded
(memory, time), and what must come out clean (exit codes, escaped text).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.helpers import DEFAULT_DB
from tests.hostile_server import (
    Answer,
    HostileServer,
    Seen,
    empty_page,
    gzip_bomb,
    json_answer,
    self_signed,
)
from tests.inproc import run_main
from tests.quick_retries import short_backoff

SENTINEL = "bsk_live_SENTINEL_hostile_5a4b"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def env_for(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != "NO_PROXY"}
    env.pop("no_proxy", None)
    env.pop("SSL_CERT_FILE", None)
    env.update(
        SOURCES__CIKLEK__BASE_URL=base_url,
        SOURCES__CIKLEK__API_KEY=SENTINEL,
        SOURCES__CIKLEK__REQUESTS_PER_MINUTE="10000",
    )
    env.update(extra)
    return env


def output(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


# ---- the one URL rule ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["http://127.0.0.1:{port}/steal", "//127.0.0.1:{port}/steal"])
def test_a_catalogue_path_pointing_at_another_host_sends_it_nothing(form: str) -> None:
    with HostileServer() as api, HostileServer() as elsewhere:
        catalogue = json.dumps({"orders": {"path": form.format(port=elsewhere.port)}})
        run = run_main("check", env=env_for(api.base_url, SOURCES__CIKLEK__CATALOGUE=catalogue))
    assert run.returncode == 2, output(run)
    assert "key valid" not in output(run)
    assert "catalogue.orders.path" in run.stderr and "not a relative path" in run.stderr
    assert elsewhere.requests == []
    assert api.requests == []  # refused at start-up: nothing was sent anywhere
    assert SENTINEL not in output(run)


def test_a_proxy_listener_receives_nothing_from_a_plain_http_loopback_client() -> None:
    with HostileServer() as api, HostileServer() as proxy:
        proxies = {name: proxy.url for name in PROXY_VARS}
        run = run_main("check", env=env_for(api.base_url, **proxies))
    assert run.returncode == 0, output(run)
    assert "key valid" in run.stdout
    assert proxy.requests == []
    assert sorted(seen.path.split("?")[0] for seen in api.requests) == [
        "/v1/customers",
        "/v1/orders",
        "/v1/products",
    ]
    assert {seen.headers["authorization"] for seen in api.requests} == {f"Bearer {SENTINEL}"}


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_a_base_url_with_user_info_exits_2_and_never_prints_the_password(
    debug: list[str],
) -> None:
    password = "pw-SENTINEL-c0ffee"
    with HostileServer() as api:
        url = f"http://user:{password}@127.0.0.1:{api.port}/v1"
        run = run_main(*debug, "check", env=env_for(url))
    assert run.returncode == 2, output(run)
    assert "user info" in run.stderr
    assert password not in output(run)
    assert api.requests == []


# ---- bounded memory -----------------------------------------------------------------------

# VmHWM (this process's own peak), not ru_maxrss: on Linux ru_maxrss survives exec, so a child
# forked from a large test process would report the parent's size, not its own.
PEAK_RSS = """
import re, resource, sys
from connector.cli.app import main
code = main(["check"])
try:
    with open("/proc/self/status") as status:
        peak = int(re.search(r"VmHWM:\\s+(\\d+)", status.read())[1])
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"PEAK_RSS_KB={peak}", file=sys.stderr)
sys.exit(code)
"""


def test_check_against_a_gzip_bomb_stops_early_and_peaks_under_300_mb() -> None:
    bomb = gzip_bomb(400 * 1024 * 1024)  # ~400 KB on the wire, 400 MiB decoded
    assert len(bomb) < 500_000

    def respond(seen: Seen) -> Answer:
        return Answer(200, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})

    with HostileServer(respond) as api:
        run = subprocess.run(
            [sys.executable, "-c", PEAK_RSS],
            env=env_for(api.base_url),
            capture_output=True,
            text=True,
            timeout=180,
        )
    peak_kb = int(run.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    print(f"peak RSS of `ciklek check` against a {len(bomb):,}-byte gzip bomb: {peak_kb} KB")
    assert peak_kb < 300 * 1024, f"peak RSS {peak_kb} KB"
    assert run.returncode == 1, run.stderr  # a broken contract: reported, not retried
    assert "byte cap once decoded" in run.stderr
    assert "key valid" not in run.stdout
    assert len(api.requests) == 1


def test_a_page_with_more_records_than_limit_is_a_broken_contract_naming_the_limit() -> None:
    page = {"data": [{"id": f"id-{i}"} for i in range(20_000)], "meta": {"next_cursor": None}}

    def respond(seen: Seen) -> Answer:
        return json_answer(page)

    with HostileServer(respond) as api:
        run = run_main("check", env=env_for(api.base_url))
    assert run.returncode == 1, output(run)
    assert "20000 records on one page for limit=1" in run.stderr
    assert "key valid" not in run.stdout
    assert len(api.requests) == 1


# ---- garbled pages, hangs, absurd headers: retried, then 75 -------------------------------


def test_a_body_nested_too_deep_is_a_garbled_page_retried_then_exit_75(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short_backoff(monkeypatch)  # retried, then 75: how long the one back-off is is no matter

    def respond(seen: Seen) -> Answer:
        return Answer(200, b"[" * 100_000, {"Content-Type": "application/json"})

    with HostileServer(respond) as api:
        run = run_main("check", env=env_for(api.base_url, SOURCES__CIKLEK__MAX_ATTEMPTS="2"))
    assert run.returncode == 75, output(run)
    assert "RecursionError" not in output(run)
    assert "not a Ciklek envelope" in run.stderr
    assert len(api.requests) == 2


def test_a_trickled_body_is_cut_at_the_request_deadline_then_exit_75(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short_backoff(monkeypatch)  # the deadline is the point, not the back-off between attempts
    body = json.dumps({"data": [], "meta": {"next_cursor": None}}).encode() + b" " * 5000

    def respond(seen: Seen) -> Answer:
        return Answer(200, body, {"Content-Type": "application/json"}, trickle=0.05)

    with HostileServer(respond) as api:
        run = run_main(
            "check",
            env=env_for(
                api.base_url,
                SOURCES__CIKLEK__REQUEST_DEADLINE_SECONDS="0.5",
                SOURCES__CIKLEK__MAX_ATTEMPTS="2",
            ),
        )
    # 5,000 bytes at one per 50 ms would take over four minutes per attempt.
    assert run.returncode == 75, output(run)
    assert "request_deadline_seconds" in run.stderr
    assert len(api.requests) == 2


@pytest.mark.parametrize("reset", ["1e20", "inf", "nan", "-1", "9" * 40])
def test_an_absurd_rate_limit_reset_is_never_exit_1_nor_minutes_of_waiting(
    reset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The absurd Reset must fall back to the short exponential back-off, not be waited for:
    # with that back-off at 20 ms, honouring the Reset (or waiting max_wait_seconds) would
    # still show as minutes here.
    short_backoff(monkeypatch)

    def respond(seen: Seen) -> Answer:
        headers = {"X-RateLimit-Limit": "120", "X-RateLimit-Remaining": "0"}
        error = {"error": {"code": "rate_limited", "message": "slow down", "status": 429}}
        return json_answer(error, 429, **headers, **{"X-RateLimit-Reset": reset})

    with HostileServer(respond) as api:
        run = run_main("check", env=env_for(api.base_url, SOURCES__CIKLEK__MAX_ATTEMPTS="2"))
    assert run.returncode == 75, output(run)
    assert "still rate limited" in run.stderr
    assert len(api.requests) == 2  # one short back-off, then give up: seconds, not minutes


# ---- TLS ----------------------------------------------------------------------------------


def test_an_untrusted_certificate_exits_2_naming_ssl_cert_file_and_trusting_it_works(
    tmp_path: Path,
) -> None:
    cert = self_signed(tmp_path)
    with HostileServer(tls=cert.server_context()) as api:
        refused = run_main("check", env=env_for(api.base_url))
        trusted = run_main("check", env=env_for(api.base_url, SSL_CERT_FILE=str(cert.cert)))
        served = len(api.requests)
    assert refused.returncode == 2, output(refused)
    assert "certificate not trusted: check SSL_CERT_FILE / your proxy" in refused.stderr
    assert "try again later" not in output(refused)
    assert trusted.returncode == 0, output(trusted)
    assert "key valid" in trusted.stdout
    assert served == 3  # only the trusted run's three requests got through TLS


# ---- clean text ---------------------------------------------------------------------------

ESCAPES = "nope\x1b]52;c;ZXZpbA==\x07\x1b]0;owned\x07\x1b[2J\rall good\x9b1m"


def assert_clean(text: str, where: str) -> None:
    for raw in ("\x1b", "\x07", "\r", "\x9b"):
        assert raw not in text, f"raw {raw!r} in {where}"


def test_server_escape_sequences_are_escaped_in_output_status_and_run_rows(
    clean_env: Path,
) -> None:
    def respond(seen: Seen) -> Answer:
        if seen.path.startswith("/v1/orders"):
            error = {"error": {"code": "bad_request", "message": ESCAPES, "status": 400}}
            return json_answer(error, 400)
        return empty_page(seen)

    with HostileServer(respond) as api:
        env = env_for(api.base_url)
        check = run_main("check", env=env)
        sync = run_main("sync", env=env)
        status = run_main("status", env=env)
        status_json = run_main("status", "--json", env=env)
    assert check.returncode == 1, output(check)
    assert sync.returncode == 1, output(sync)
    for name, run in (("check", check), ("sync", sync), ("status", status)):
        assert_clean(output(run), name)
    assert "\\x1b]52;c;ZXZpbA==\\x07" in check.stderr  # escaped, still readable
    assert "\\x1b]52" in output(sync)
    home = Path(os.environ["CIKLEK_HOME"])
    stored = [p for p in home.rglob("status.json")]
    assert stored, list(home.rglob("*"))
    for path in stored:
        text = path.read_text(encoding="utf-8")
        assert_clean(json.loads(text).__repr__() + text, str(path))
    assert_clean(json.dumps(json.loads(status_json.stdout)), "status --json")
    with duckdb.connect(str(clean_env / DEFAULT_DB), read_only=True) as con:
        messages = [
            row[0] or ""
            for row in con.sql("select message from ciklek._ciklek_sync_runs").fetchall()
        ]
    assert messages and any("\\x1b]52" in m for m in messages)
    for message in messages:
        assert_clean(message, "_ciklek_sync_runs.message")
