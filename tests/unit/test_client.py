"""CiklekClient's retry policy, pinned through httpx.MockTransport with injected sleep and clock.

Every test runs in fake time: `FakeTime.sleep` records the wait and moves the fake clock, so
the suite never really waits and each test asserts the exact wait schedule.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connector.api.client import CiklekClient
from connector.api.ledger import RequestLog
from connector.api.limiter import RateLimiter
from connector.config.redaction import ApiKey, scrub
from connector.errors import (
    ApiError,
    BadRequest,
    CiklekUnavailable,
    ConfigError,
    MissingScope,
    NotFound,
    QuotaExhausted,
    Unauthorized,
    ValidationFailed,
)
from tests.unit.fake_time import T0, FakeTime

SECRET = "bsk_live_SENTINEL_unit_4c3b2a"
BASE = "https://api.ciklek.test/v1"

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(
    handler: Handler, ft: FakeTime, *, jitter: float = 0.0, **kwargs: Any
) -> CiklekClient:
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: jitter)
    return CiklekClient(
        BASE,
        ApiKey(SECRET),
        limiter=limiter,
        transport=httpx.MockTransport(handler),
        sleep=ft.sleep,
        jitter=lambda: jitter,
        clock=ft.clock,
        **kwargs,
    )


def ok(data: Any = None, **headers: str) -> httpx.Response:
    body = {"data": [] if data is None else data, "meta": {"next_cursor": None}}
    return httpx.Response(200, json=body, headers=headers)


def api_error(
    status: int,
    code: str,
    message: str = "no",
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return httpx.Response(status, json={"error": err}, headers=headers or {})


def rate_limited(reset: float | None, code: str = "rate_limited") -> httpx.Response:
    headers = {"X-RateLimit-Limit": "120", "X-RateLimit-Remaining": "0"}
    if reset is not None:
        headers["X-RateLimit-Reset"] = str(int(reset))
    return api_error(429, code, "slow down", headers=headers)


def scripted(*responses: Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering /v1/orders with `responses` in order (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/orders"
        index = min(len(seen), len(responses) - 1)
        seen.append(request)
        item = responses[index]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


Response = httpx.Response


# ---- 429 rate_limited ----------------------------------------------------------------------


def test_429_waits_until_reset_header_not_a_fixed_backoff() -> None:
    ft = FakeTime()
    handler, seen = scripted(rate_limited(T0 + 37), ok([{"id": "a"}]))
    with make_client(handler, ft) as client:
        body = client.get("orders")
    assert body["data"] == [{"id": "a"}]
    assert ft.sleeps == [37.0]
    assert len(seen) == 2


def test_429_wait_adds_the_jitter_after_reset() -> None:
    ft = FakeTime()
    handler, _ = scripted(rate_limited(T0 + 12), ok())
    with make_client(handler, ft, jitter=0.2) as client:
        client.get("orders")
    assert ft.sleeps == [12.2]


def test_429_waits_do_not_count_as_failed_attempts() -> None:
    ft = FakeTime()
    # Three 429s, each with the Reset of the next 10 s window, then success: with only two
    # attempts allowed for transient failures the call still succeeds.
    responses = [rate_limited(T0 + 10 * (i + 1)) for i in range(3)]
    handler, seen = scripted(*responses, ok())
    with make_client(handler, ft, max_attempts=2) as client:
        client.get("orders")
    assert ft.sleeps == [10.0, 10.0, 10.0]
    assert len(seen) == 4


def test_429_waits_are_capped() -> None:
    ft = FakeTime()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return rate_limited(ft.now + 5)  # the server never lets us through

    client = make_client(handler, ft, max_rate_limit_waits=3)
    with client, pytest.raises(CiklekUnavailable) as info:
        client.get("orders")
    assert ft.sleeps == [5.0, 5.0, 5.0]
    assert len(seen) == 4
    assert info.value.last_status == 429
    assert info.value.endpoint == "/orders"
    assert "/orders" in str(info.value)


@pytest.mark.parametrize("reset", [None, T0 - 30], ids=["missing", "past"])
def test_429_without_a_future_reset_backs_off_exponentially(reset: float | None) -> None:
    ft = FakeTime()
    handler, seen = scripted(*[rate_limited(reset) for _ in range(3)], ok())
    with make_client(handler, ft) as client:
        client.get("orders")
    assert ft.sleeps == [0.5, 1.0, 2.0]  # short and growing: never a hot loop
    assert len(seen) == 4


def test_429_daily_quota_raises_quota_exhausted_with_resume_at() -> None:
    ft = FakeTime()
    midnight = T0 + 5 * 3600
    handler, seen = scripted(rate_limited(midnight, code="daily_quota_exceeded"))
    with make_client(handler, ft) as client, pytest.raises(QuotaExhausted) as info:
        client.get("orders")
    assert info.value.resume_at == dt.datetime.fromtimestamp(midnight, dt.UTC)
    assert "daily quota" in str(info.value)
    assert ft.sleeps == []
    assert len(seen) == 1


def test_the_last_response_s_rate_limit_headers_are_kept_as_sent() -> None:
    """What the API last said of the key's allowance (a scheduler shows it beside the own
    budget): the latest response's headers, a 429's included; a response without them keeps
    the previous ones."""
    ft = FakeTime()
    midnight = T0 + 5 * 3600
    handler, _ = scripted(
        ok(**{"X-RateLimit-Limit": "120", "X-RateLimit-Remaining": "117",
              "X-RateLimit-Reset": str(int(T0 + 60))}),
        ok(),
        rate_limited(midnight, code="daily_quota_exceeded"),
    )  # fmt: skip
    with make_client(handler, ft) as client:
        assert client.last_rate_limit is None
        client.get("orders")
        first = client.last_rate_limit
        assert first is not None
        assert (first.limit, first.remaining, first.reset_at, first.status) == (
            120, 117, float(int(T0 + 60)), 200,
        )  # fmt: skip
        client.get("orders")  # no headers: the last ones that were sent still stand
        assert client.last_rate_limit == first
        with pytest.raises(QuotaExhausted):
            client.get("orders")
        spent = client.last_rate_limit
    assert spent is not None
    assert (spent.remaining, spent.reset_at, spent.status) == (0, float(int(midnight)), 429)


def test_429_daily_quota_without_reset_still_stops() -> None:
    ft = FakeTime()
    handler, seen = scripted(rate_limited(None, code="daily_quota_exceeded"))
    with make_client(handler, ft) as client, pytest.raises(QuotaExhausted) as info:
        client.get("orders")
    assert info.value.resume_at is None
    assert ft.sleeps == []
    assert len(seen) == 1


def test_429_reset_beyond_max_wait_raises_quota_exhausted() -> None:
    ft = FakeTime()
    handler, seen = scripted(rate_limited(T0 + 121))
    client = make_client(handler, ft, max_wait_seconds=120)
    with client, pytest.raises(QuotaExhausted) as info:
        client.get("orders")
    assert info.value.resume_at == dt.datetime.fromtimestamp(T0 + 121, dt.UTC)
    assert ft.sleeps == []
    assert len(seen) == 1


def test_429_reset_within_max_wait_is_waited_for() -> None:
    ft = FakeTime()
    handler, _ = scripted(rate_limited(T0 + 120), ok())
    with make_client(handler, ft, max_wait_seconds=120) as client:
        client.get("orders")
    assert ft.sleeps == [120.0]


def test_after_quota_exhausted_the_next_call_does_not_sleep_until_midnight() -> None:
    ft = FakeTime()
    midnight = T0 + 5 * 3600
    handler, seen = scripted(rate_limited(midnight, code="daily_quota_exceeded"))
    client = make_client(handler, ft)
    with pytest.raises(QuotaExhausted):
        client.get("orders")
    # Another resource's first request: the limiter knows the key is blocked for hours, so
    # it must stop the same way instead of sleeping until Reset.
    with pytest.raises(QuotaExhausted) as info:
        client.get("customers")
    client.close()
    assert info.value.resume_at == dt.datetime.fromtimestamp(midnight, dt.UTC)
    assert ft.sleeps == []
    assert len(seen) == 1


# ---- transient failures --------------------------------------------------------------------

TRANSIENT: dict[str, Callable[[], httpx.Response | Exception]] = {
    "500": lambda: api_error(500, "internal_error"),
    "503-plain": lambda: httpx.Response(503, text="unavailable"),
    "502-html-proxy": lambda: httpx.Response(
        502, text="<html><body>Bad Gateway</body></html>", headers={"content-type": "text/html"}
    ),
    "read-timeout": lambda: httpx.ReadTimeout("timed out"),
    "connect-error": lambda: httpx.ConnectError("refused"),
    "dropped": lambda: httpx.RemoteProtocolError("peer closed connection"),
    "truncated-json": lambda: httpx.Response(200, content=b'{"data":[{"id":"a"},{"id'),
    "json-without-data": lambda: httpx.Response(200, json={"meta": {}}),
    "json-not-an-object": lambda: httpx.Response(200, json=[1, 2]),
}
LAST_STATUS = {
    "500": 500,
    "503-plain": 503,
    "502-html-proxy": 502,
    "read-timeout": None,
    "connect-error": None,
    "dropped": None,
    "truncated-json": 200,
    "json-without-data": 200,
    "json-not-an-object": 200,
}


@pytest.mark.parametrize("kind", list(TRANSIENT))
def test_transient_failure_is_retried_with_exponential_backoff(kind: str) -> None:
    ft = FakeTime()
    handler, seen = scripted(TRANSIENT[kind](), TRANSIENT[kind](), ok([{"id": "x"}]))
    with make_client(handler, ft) as client:
        body = client.get("orders")
    assert body["data"] == [{"id": "x"}]
    assert ft.sleeps == [0.5, 1.0]
    assert len(seen) == 3


@pytest.mark.parametrize("kind", list(TRANSIENT))
def test_transient_failure_exhausts_attempts_then_names_endpoint_and_status(kind: str) -> None:
    ft = FakeTime()
    handler, seen = scripted(TRANSIENT[kind]())
    client = make_client(handler, ft, max_attempts=5)
    with client, pytest.raises(CiklekUnavailable) as info:
        client.get("orders")
    assert ft.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert len(seen) == 5
    exc = info.value
    assert exc.endpoint == "/orders"
    assert exc.last_status == LAST_STATUS[kind]
    assert "/orders" in str(exc)
    assert "5 attempts" in str(exc)
    if exc.last_status is not None:
        assert str(exc.last_status) in str(exc)


def test_backoff_is_capped_and_jitter_is_added() -> None:
    ft = FakeTime()
    handler, _ = scripted(api_error(500, "internal_error"))
    client = make_client(handler, ft, jitter=0.1, max_attempts=6, backoff_max=3.0)
    with client, pytest.raises(CiklekUnavailable):
        client.get("orders")
    assert ft.sleeps == [0.6, 1.1, 2.1, 3.1, 3.1]


def test_rate_limit_waits_and_transient_failures_have_separate_budgets() -> None:
    ft = FakeTime()
    handler, seen = scripted(
        api_error(500, "internal_error"),
        rate_limited(T0 + 30),
        api_error(502, "bad_gateway"),
        rate_limited(None),
        ok(),
    )
    with make_client(handler, ft, max_attempts=3) as client:
        client.get("orders")
    # 500 → 0.5 s; 429 → until Reset (30 - 0.5); 502 → 1.0 s (second transient); 429 without
    # Reset → 1.0 s (second rate-limit wait, exponential because Reset is unknown).
    assert ft.sleeps == [0.5, 29.5, 1.0, 1.0]
    assert len(seen) == 5


# ---- fatal errors --------------------------------------------------------------------------

FATAL: list[tuple[int, str, type[ApiError], Any]] = [
    (400, "bad_request", BadRequest, None),
    (401, "unauthorized", Unauthorized, None),
    (403, "forbidden", MissingScope, None),
    (404, "not_found", NotFound, None),
    (422, "validation_failed", ValidationFailed, [{"field": "currency", "message": "required"}]),
]


@pytest.mark.parametrize(("status", "code", "error_type", "details"), FATAL)
def test_fatal_status_raises_typed_error_after_one_request(
    status: int, code: str, error_type: type[ApiError], details: Any
) -> None:
    ft = FakeTime()
    message = f"server says {status}"
    handler, seen = scripted(api_error(status, code, message, details))
    with make_client(handler, ft) as client, pytest.raises(ApiError) as info:
        client.get("orders")
    exc = info.value
    assert type(exc) is error_type
    assert (exc.status, exc.code, exc.server_message, exc.details) == (
        status,
        code,
        message,
        details,
    )
    assert exc.endpoint == "/orders"
    assert f"HTTP {status} {code} on /orders: {message}" == str(exc)
    assert len(seen) == 1
    assert ft.sleeps == []


# ---- POST and Idempotency-Key --------------------------------------------------------------


def test_retried_post_reuses_one_idempotency_key() -> None:
    ft = FakeTime()
    keys: list[str | None] = []
    bodies: list[Any] = []
    created = {"id": "order-1", "total": 1200}

    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/orders")
        keys.append(request.headers.get("idempotency-key"))
        bodies.append(json.loads(request.content))
        if len(keys) == 1:
            return api_error(500, "internal_error")
        if len(keys) == 2:
            raise httpx.ReadTimeout("lost the 201")
        return httpx.Response(201, json={"data": created})

    with make_client(handler, ft) as client:
        order = client.create_order({"customer_id": "c1", "currency": "USD"})
        second = client.create_order({"customer_id": "c1", "currency": "USD"})
    assert order == created and second == created
    assert ft.sleeps == [0.5, 1.0]
    first_call = keys[:3]
    assert len(set(first_call)) == 1
    assert first_call[0] is not None
    uuid.UUID(first_call[0])
    assert keys[3] != first_call[0]  # a new logical call gets a new key
    assert bodies[0] == bodies[1] == bodies[2] == {"customer_id": "c1", "currency": "USD"}


def test_post_uses_a_given_idempotency_key_on_every_attempt() -> None:
    ft = FakeTime()
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) < 3:
            return httpx.Response(502, text="<html>proxy</html>")
        return httpx.Response(201, json={"data": {"id": "w1"}})

    with make_client(handler, ft) as client:
        body = client.post("orders", {"x": 1}, idempotency_key="my-key-1")
    assert body == {"data": {"id": "w1"}}
    assert keys == ["my-key-1"] * 3


def test_post_validation_error_is_not_retried() -> None:
    ft = FakeTime()
    details = [{"field": "customer_id", "message": "unknown customer"}]
    handler, seen = scripted(api_error(422, "validation_failed", "Order invalid", details))
    with make_client(handler, ft) as client, pytest.raises(ValidationFailed) as info:
        client.create_order({"customer_id": "nope"})
    assert info.value.details == details
    assert len(seen) == 1


# ---- the limiter seen through the client ---------------------------------------------------


def test_remaining_zero_makes_the_next_request_wait_until_reset_without_a_429() -> None:
    ft = FakeTime()
    reset = T0 + 50
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(ft.now)
        remaining = max(0, 2 - len(sent_at)) if ft.now < reset else 119
        headers = {
            "X-RateLimit-Limit": "120",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset if ft.now < reset else reset + 60)),
        }
        if ft.now < reset and len(sent_at) > 2:
            return rate_limited(reset)
        return ok(**headers)

    log = RequestLog()
    with make_client(handler, ft, log=log) as client:
        for _ in range(4):
            client.get("orders")
    assert sent_at == [T0, T0, reset, reset]
    assert ft.sleeps == [50.0]
    assert log.rate_limited == 0
    assert log.waited_seconds == pytest.approx(50.0)


# ---- the request ledger --------------------------------------------------------------------


def test_request_log_counts_requests_429s_and_waits_per_endpoint() -> None:
    ft = FakeTime()
    customers = iter([api_error(503, "unavailable"), rate_limited(T0 + 20), ok()])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/customers":
            return next(customers)
        return ok()

    log = RequestLog()
    with make_client(handler, ft, log=log) as client:
        client.get("orders")
        client.get("customers")
        client.get("orders")
    assert log.requests == 5
    assert log.rate_limited == 1
    assert log.waited_seconds == pytest.approx(20.0)  # 0.5 back-off + 19.5 until Reset
    orders, customers_stats = log.for_endpoint("/orders"), log.for_endpoint("/customers")
    assert (orders.requests, dict(orders.by_status), orders.waited_seconds) == (2, {"200": 2}, 0)
    assert customers_stats.requests == 3
    assert dict(customers_stats.by_status) == {"503": 1, "429": 1, "200": 1}
    assert customers_stats.rate_limited == 1
    assert customers_stats.waited_seconds == pytest.approx(20.0)


def test_request_log_counts_no_wait_for_the_attempt_that_gives_up() -> None:
    ft = FakeTime()
    handler, _ = scripted(api_error(500, "internal_error"))
    log = RequestLog()
    client = make_client(handler, ft, log=log, max_attempts=3)
    with client, pytest.raises(CiklekUnavailable):
        client.get("orders")
    assert log.requests == 3
    assert log.waited_seconds == pytest.approx(sum(ft.sleeps)) == pytest.approx(1.5)


def test_transport_errors_are_counted_by_exception_name() -> None:
    ft = FakeTime()
    handler, _ = scripted(httpx.ReadTimeout("slow"), ok())
    log = RequestLog()
    with make_client(handler, ft, log=log) as client:
        client.get("orders")
    assert dict(log.for_endpoint("/orders").by_status) == {"ReadTimeout": 1, "200": 1}


# ---- security ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.ciklek.com/v1",
        "http://10.0.0.5:8080/v1",
        "http://127.0.0.1.evil.example/v1",
        "http://localhost.evil.example/v1",
        "ftp://127.0.0.1/v1",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        CiklekClient(url, ApiKey(SECRET), transport=httpx.MockTransport(lambda r: ok()))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.ciklek.com/v1",
        "https://api.ciklek.com/v1/",
        "http://127.0.0.1:8123/v1",
        "http://localhost:8123/v1",
        "http://[::1]:8123/v1",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return ok()

    with CiklekClient(url, ApiKey(SECRET), transport=httpx.MockTransport(handler)) as client:
        client.get("orders")
    assert seen == [url.rstrip("/") + "/orders"]


def test_key_is_sent_as_bearer_but_never_shown() -> None:
    ft = FakeTime()
    auth: list[str] = []
    errors: list[BaseException] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers["authorization"])
        if request.url.path == "/v1/orders":
            return ok()
        status = int(request.url.path.rsplit("/", 1)[-1])
        if status == 429:
            return rate_limited(ft.now + 10_000, code="daily_quota_exceeded")
        if status == 599:
            raise httpx.ConnectError(f"could not connect with {request.headers['authorization']}")
        return api_error(status, "x", "denied")

    key = ApiKey(SECRET)
    with make_client(handler, ft, max_attempts=2) as client:
        client.get("orders")
        for status in (400, 401, 403, 404, 422, 429, 500, 599):
            with pytest.raises(Exception) as info:
                client.get(f"fail/{status}")
            errors.append(info.value)
        shown = [repr(client), str(client), repr(key), str(key), f"{key}", f"{key!r}"]
    assert auth[0] == f"Bearer {SECRET}"
    for exc in errors:
        shown += [str(exc), repr(exc), repr(vars(exc)), repr(exc.args)]
        assert exc.__cause__ is None or SECRET not in str(exc.__cause__)
        assert exc.__context__ is None or SECRET not in repr(exc.__context__)
    assert len(shown) == 6 + 4 * 8
    for text in shown:
        assert SECRET not in text
    assert not hasattr(key, "__dict__")


def test_a_plain_string_key_is_sent_as_bearer_and_scrubbed_like_a_configured_one() -> None:
    plain = "bsk_live_PLAIN_string_7e1d"
    auth: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers["authorization"])
        return ok()

    with CiklekClient(BASE, f"{plain}\n", transport=httpx.MockTransport(handler)) as client:
        client.get("orders")
    assert auth == [f"Bearer {plain}"]  # the pasted newline stripped
    assert scrub(f"sent {plain}") == "sent ***"
