"""The client against a hostile server, through httpx.MockTransport, in fake time.

Each test pins one finding of the hostile-server audit (issue 15): what the server sends, and
what the client must do instead of crashing, hanging, filling memory or printing escapes.
"""

from __future__ import annotations

import gzip
import ssl
import zlib
from collections.abc import Iterator

import httpx
import pytest

from connector.api.client import CiklekClient
from connector.api.ledger import RequestLog
from connector.api.limiter import RateLimiter, reset_instant
from connector.api.responses import parse_json
from connector.config.redaction import ApiKey
from connector.errors import (
    ApiError,
    BadRequest,
    CertificateNotTrusted,
    CiklekUnavailable,
    ConfigError,
    ContractViolation,
)
from tests.unit.fake_time import T0, FakeTime
from tests.unit.test_client import SECRET, api_error, make_client, ok, rate_limited, scripted

# ---- bounded memory: the decoded body and the records per page ----------------------------


def raw(body: bytes, status: int = 200, **headers: str) -> httpx.Response:
    """A response whose body is decoded only when the client reads it, as off the network."""
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return httpx.Response(status, stream=httpx.ByteStream(body), headers=named)


def gzipped_spaces(decoded: int) -> bytes:
    return gzip.compress(b'{"data": [' + b" " * decoded + b"]}", compresslevel=9)


def test_a_compression_bomb_stops_at_the_decoded_size_cap_and_names_it() -> None:
    ft = FakeTime()
    bomb = gzipped_spaces(20 * 1024 * 1024)
    assert len(bomb) < 40_000  # 20 MiB of spaces gzip to about 20 KB
    handler, seen = scripted(raw(bomb, content_encoding="gzip"))
    client = make_client(handler, ft, max_body_bytes=1_000_000)
    with client, pytest.raises(ContractViolation) as info:
        client.get("orders")
    assert "1,000,000-byte cap" in str(info.value)
    assert "decoded" in str(info.value)
    assert len(seen) == 1  # a broken contract is not retried
    assert ft.sleeps == []


def test_a_body_under_the_cap_is_decoded_normally() -> None:
    ft = FakeTime()
    body = gzip.compress(b'{"data": [{"id": "a"}], "meta": {"next_cursor": null}}')
    handler, _ = scripted(raw(body, content_encoding="gzip"))
    with make_client(handler, ft, max_body_bytes=1_000) as client:
        assert client.fetch_page("orders", limit=1).records == [{"id": "a"}]


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
def test_an_encoding_we_did_not_ask_for_is_refused_before_decoding(encoding: str) -> None:
    ft = FakeTime()
    handler, seen = scripted(raw(b"\x00" * 10, content_encoding=encoding))
    with make_client(handler, ft) as client, pytest.raises(ContractViolation) as info:
        client.get("orders")
    assert "was not asked for" in str(info.value)
    assert seen[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_gzip_body_that_does_not_inflate_is_a_garbled_page_and_retried() -> None:
    ft = FakeTime()

    def broken() -> httpx.Response:
        return raw(b"\x1f\x8bnot gzip", content_encoding="gzip")

    handler, seen = scripted(broken(), broken(), ok([{"id": "x"}]))
    with make_client(handler, ft) as client:
        assert client.get("orders")["data"] == [{"id": "x"}]
    assert ft.sleeps == [0.5, 1.0]
    assert len(seen) == 3


def test_more_records_than_limit_is_a_broken_contract_naming_the_limit() -> None:
    ft = FakeTime()
    handler, seen = scripted(ok([{"id": str(i)} for i in range(20_000)]))
    with make_client(handler, ft) as client, pytest.raises(ContractViolation) as info:
        client.fetch_page("orders", limit=1)
    assert "20000 records on one page for limit=1" in str(info.value)
    assert info.value.status == 200
    assert len(seen) == 1


def test_exactly_limit_records_are_accepted() -> None:
    ft = FakeTime()
    handler, _ = scripted(ok([{"id": str(i)} for i in range(3)]))
    with make_client(handler, ft) as client:
        assert len(client.fetch_page("orders", limit=3).records) == 3


def test_non_list_data_is_a_contract_violation_and_still_an_api_error() -> None:
    # Still an ApiError (status 200), so every caller that stops a resource on an API error
    # keeps doing so, and the CLI's exit code for it stays 1.
    ft = FakeTime()
    handler, _ = scripted(ok({"id": "a"}))
    with make_client(handler, ft) as client, pytest.raises(ContractViolation) as info:
        client.fetch_page("orders", limit=10)
    assert isinstance(info.value, ApiError)
    assert str(info.value) == "HTTP 200 on /orders: list endpoint returned a non-list `data`"


# ---- a body nested too deep to parse ------------------------------------------------------


def test_parse_json_turns_a_body_nested_too_deep_into_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deep"):
        parse_json(b"[" * 100_000)


def test_a_body_nested_too_deep_is_a_garbled_page_retried_then_unavailable() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(200, content=b"[" * 100_000))
    client = make_client(handler, ft, max_attempts=3)
    with client, pytest.raises(CiklekUnavailable) as info:
        client.get("orders")
    assert len(seen) == 3
    assert ft.sleeps == [0.5, 1.0]
    assert "not a Ciklek envelope" in str(info.value)


# ---- the overall deadline -----------------------------------------------------------------


class Trickle(httpx.SyncByteStream):
    """A body that arrives one byte per `step` fake seconds."""

    def __init__(self, ft: FakeTime, body: bytes, step: float) -> None:
        self.ft, self.body, self.step = ft, body, step

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self.body)):
            self.ft.now += self.step
            yield self.body[i : i + 1]


def test_a_trickled_body_is_cut_at_the_deadline_and_counted_as_transient() -> None:
    ft = FakeTime()
    body = b'{"data": [], "meta": {}}' + b" " * 1000
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Trickle(ft, body, step=1.0))

    log = RequestLog()
    client = make_client(
        handler, ft, log=log, max_attempts=2, request_deadline_seconds=5, monotonic=ft.clock
    )
    with client, pytest.raises(CiklekUnavailable) as info:
        client.get("orders")
    assert len(seen) == 2
    assert "over the 5 s request_deadline_seconds" in str(info.value)
    assert dict(log.for_endpoint("/orders").by_status) == {"DeadlineExceeded": 2}
    # Each attempt stopped one byte past its deadline, not after the 1,024-byte body.
    assert ft.now - T0 == pytest.approx(2 * 6.0 + 0.5)


def test_a_body_within_the_deadline_is_read_whole() -> None:
    ft = FakeTime()
    body = b'{"data": [{"id": "a"}]}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Trickle(ft, body, step=0.1))

    client = make_client(handler, ft, request_deadline_seconds=5, monotonic=ft.clock)
    with client:
        assert client.get("orders")["data"] == [{"id": "a"}]


# ---- X-RateLimit-Reset that cannot be believed --------------------------------------------

ABSURD_RESETS = ["1e20", "inf", "-inf", "nan", "-5", "9" * 40, "12", str(int(T0 + 3 * 86_400))]


@pytest.mark.parametrize("reset", ABSURD_RESETS)
def test_an_absurd_reset_is_treated_as_missing(reset: str) -> None:
    assert reset_instant(reset, T0) is None


@pytest.mark.parametrize("reset", ABSURD_RESETS)
def test_a_429_with_an_absurd_reset_gets_the_short_backoff(reset: str) -> None:
    ft = FakeTime()
    headers = {"X-RateLimit-Limit": "120", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    handler, seen = scripted(api_error(429, "rate_limited", headers=headers), ok([{"id": "a"}]))
    with make_client(handler, ft) as client:
        assert client.get("orders")["data"] == [{"id": "a"}]
    assert ft.sleeps == [0.5]
    assert len(seen) == 2


@pytest.mark.parametrize("reset", ["1e20", "nan", "-5"])
def test_a_server_that_always_429s_without_a_usable_reset_gives_up_in_seconds(reset: str) -> None:
    ft = FakeTime()
    headers = {"X-RateLimit-Limit": "120", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    handler, seen = scripted(api_error(429, "rate_limited", headers=headers))
    with make_client(handler, ft) as client, pytest.raises(CiklekUnavailable) as info:
        client.get("orders")
    # The transient budget (6 attempts), not 30 waits of up to 30 s (12 minutes).
    assert ft.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert len(seen) == 6
    assert info.value.last_status == 429


def test_a_believable_reset_is_still_waited_for() -> None:
    ft = FakeTime()
    handler, _ = scripted(rate_limited(T0 + 42), ok())
    with make_client(handler, ft) as client:
        client.get("orders")
    assert ft.sleeps == [42.0]


def test_the_limiter_ignores_an_absurd_reset_header() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(
        {"x-ratelimit-limit": "120", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1e20"}
    )
    assert limiter.blocked_until() is None
    assert limiter.acquire(ft.sleep) == 0.0


# ---- clean text ---------------------------------------------------------------------------

HOSTILE = "key revoked\x1b]52;c;ZXZpbA==\x07\x1b[2J\r\nFAKE: all good\x9b31m\u202e"


def test_an_error_envelope_is_escaped_when_the_error_is_built() -> None:
    ft = FakeTime()
    handler, _ = scripted(api_error(400, "bad\x1b[31m", HOSTILE, details=[{"field": "\x07x"}]))
    with make_client(handler, ft) as client, pytest.raises(BadRequest) as info:
        client.get("orders")
    exc = info.value
    text = str(exc)
    for raw in ("\x1b", "\x07", "\r", "\n", "\x9b", "\u202e"):
        assert raw not in text
    assert exc.server_message == (
        "key revoked\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\r\\nFAKE: all good\\x9b31m\\u202e"
    )
    assert exc.code == "bad\\x1b[31m"
    assert exc.details == [{"field": "\\x07x"}]


def test_a_transient_reason_from_the_server_is_escaped() -> None:
    ft = FakeTime()
    handler, _ = scripted(api_error(503, "down\x1b]0;owned\x07"))
    client = make_client(handler, ft, max_attempts=1)
    with client, pytest.raises(CiklekUnavailable) as info:
        client.get("orders")
    assert "\x1b" not in str(info.value) and "down\\x1b]0;owned\\x07" in str(info.value)


# ---- the one URL rule, in the client ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["http://127.0.0.1:9/steal", "https://evil.example/x", "//evil.example/x", "\\\\evil\\x"],
)
def test_a_request_path_with_a_scheme_or_host_is_refused_before_sending(path: str) -> None:
    ft = FakeTime()
    handler, seen = scripted(ok())
    with make_client(handler, ft) as client, pytest.raises(ConfigError) as info:
        client.get(path)
    assert seen == []
    assert "not a relative path" in str(info.value)


def test_every_request_url_is_base_url_plus_the_path() -> None:
    ft = FakeTime()
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return ok()

    with make_client(handler, ft) as client:
        client.fetch_page("orders", limit=5, after="c1")
        client.get("/v2/customers/")
    assert urls == [
        "https://api.ciklek.test/v1/orders?limit=5&after=c1",
        "https://api.ciklek.test/v1/v2/customers",
    ]


def test_plain_http_loopback_clients_ignore_proxy_settings_https_keeps_them() -> None:
    # The integration test proves no byte reaches a proxy; this pins the switch itself.
    with CiklekClient("http://127.0.0.1:9/v1", ApiKey(SECRET)) as loopback:
        assert loopback._http.trust_env is False
    with CiklekClient("https://api.ciklek.test/v1", ApiKey(SECRET)) as remote:
        assert remote._http.trust_env is True


# ---- TLS ----------------------------------------------------------------------------------


def test_a_certificate_verification_failure_is_a_config_error_not_an_outage() -> None:
    ft = FakeTime()
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"

    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise cause
        except ssl.SSLError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from exc

    seen_log = RequestLog()
    client = make_client(handler, ft, log=seen_log)
    with client, pytest.raises(CertificateNotTrusted) as info:
        client.get("orders")
    assert isinstance(info.value, ConfigError)
    assert str(info.value).startswith("certificate not trusted: check SSL_CERT_FILE / your proxy")
    assert "self-signed certificate" in str(info.value)
    assert ft.sleeps == []  # not retried


def test_a_plain_connect_error_is_still_transient() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.ConnectError("refused"), ok())
    with make_client(handler, ft) as client:
        client.get("orders")
    assert len(seen) == 2


def test_zlib_deflate_is_accepted() -> None:
    ft = FakeTime()
    body = zlib.compress(b'{"data": [{"id": "d"}]}')
    handler, _ = scripted(raw(body, content_encoding="deflate"))
    with make_client(handler, ft) as client:
        assert client.get("orders")["data"] == [{"id": "d"}]
