"""CiklekClient: every HTTP request of the connector goes through here.

Why one client: auth, throttling, the retry policy, request counting and the quota ledger must
apply to every request the same way, whichever command sends it. The retry policy is tenacity
strategies (`_wait`, `_stop`) fed by one classification function, `classify()`, which decides
retriable vs fatal for every response.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connector.errors import (
    ApiError,
    BadRequest,
    CiklekUnavailable,
    MissingScope,
    NotFound,
    QuotaExhausted,
    StopRequested,
    Unauthorized,
    ValidationFailed,
)
from connector.ledger import QuotaLedger, RequestLog
from connector.settings import ApiKey, Settings, normalize_base_url
from connector.throttle import RateLimiter, Sleep, limiter_for

USER_AGENT = "ciklek-connector/0.1 (+dlt)"
_FATAL: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: MissingScope,
    404: NotFound,
    422: ValidationFailed,
}


class _Transient(Exception):
    """Internal: a failure worth retrying with back-off (5xx, drop, timeout, garbled body)."""

    def __init__(self, reason: str, status: int | None) -> None:
        super().__init__(reason)
        self.status = status


class _RateLimited(Exception):
    """Internal: a 429 `rate_limited`; retry at `reset_at` (None when unknown or past)."""

    def __init__(self, reset_at: float | None) -> None:
        super().__init__("rate limited")
        self.reset_at = reset_at


@dataclass(frozen=True)
class Page:
    """One list page: parsed records plus the cursor that fetched it (for cheap resumes)."""

    records: list[dict[str, Any]]
    total: int | None
    page: int | None
    next_cursor: str | None
    requested_after: str | None


def _exact_int(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # beyond int()'s digit limit: kept exact, so only its record is rejected
        return Decimal(text)


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19  # 19+ digits in a row may be an integer beyond 64 bits


def parse_json(content: bytes) -> Any:
    """orjson for speed; stdlib json where integers could exceed 64 bits (they stay exact).

    orjson turns integers beyond 64 bits into floats *silently* (1e+38, not 10**38), so a body
    with any run of 19+ digits goes to the stdlib parser (a byte translate: ~1 µs per record).
    """
    # A page is an acyclic tree: refcounting frees it, and pausing the cyclic GC while it is
    # built saves the full collections its thousands of containers would trigger (~40%).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if _LONG_NUMBER not in content.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                pass
        return json.loads(content, parse_int=_exact_int)
    finally:
        if was_enabled:
            gc.enable()


def _error_fields(body: Any) -> tuple[str | None, str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error.get("code"), str(error.get("message") or ""), error.get("details")
    return None, "", None


def classify(response: httpx.Response, *, endpoint: str, now: float, max_wait: float) -> Any:
    """Return the parsed body of a good response, or raise what the response means.

    - 2xx with JSON holding `data` → the body.
    - 2xx whose body is not JSON or lacks `data` (truncated page, proxy page) → transient.
    - 429 `daily_quota_exceeded`, or a Reset further away than `max_wait` → QuotaExhausted:
      sleeping for hours is not a sync strategy.
    - 429 otherwise → wait until X-RateLimit-Reset, then retry.
    - 5xx, 408, or a non-JSON page with another status (a proxy's 502) → transient.
    - 400/401/403/404/422 → the typed fatal error, never retried, JSON body or not (a
      gateway's HTML 401 still means the key was refused); other 3xx/4xx → ApiError, fatal.
    """
    status = response.status_code
    try:
        body = parse_json(response.content)
    except ValueError:
        body = None
    if 200 <= status < 300:
        if not isinstance(body, dict) or "data" not in body:
            raise _Transient(f"HTTP {status} with a body that is not a Ciklek envelope", status)
        return body
    code, message, details = _error_fields(body)
    if status == 429:
        reset = _reset_at(response)
        if code == "daily_quota_exceeded" or (reset is not None and reset - now > max_wait):
            resume = dt.datetime.fromtimestamp(reset, dt.UTC) if reset is not None else None
            when = f"; resume after {resume:%Y-%m-%dT%H:%MZ}" if resume else ""
            raise QuotaExhausted(
                f"{'daily quota exhausted' if code == 'daily_quota_exceeded' else 'rate limited'}"
                f" on {endpoint}{when}",
                resume_at=resume,
            )
        raise _RateLimited(reset if reset is not None and reset > now else None)
    if status >= 500 or status == 408 or (body is None and status < 300):
        raise _Transient(f"HTTP {status}{f' {code}' if code else ''}", status)
    error_type = _FATAL.get(status, ApiError)
    message = message or response.reason_phrase or "error"
    if error_type is MissingScope:
        raise MissingScope(message, code=code, details=details, endpoint=endpoint, status=status)
    raise error_type(message, code=code, details=details, endpoint=endpoint, status=status)


def _reset_at(response: httpx.Response) -> float | None:
    raw = response.headers.get("x-ratelimit-reset")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def build_client(
    settings: Settings,
    *,
    quota: QuotaLedger | None = None,
    log: RequestLog | None = None,
    stop_event: threading.Event | None = None,
) -> CiklekClient:
    """The one way every command builds its client: the same limits, limiter and ledger."""
    key = settings.require_key()
    return CiklekClient(
        settings.base_url,
        key,
        limiter=limiter_for(key.fingerprint, settings.requests_per_minute),
        quota=quota,
        log=log,
        max_attempts=settings.max_attempts,
        max_rate_limit_waits=settings.max_rate_limit_waits,
        max_wait_seconds=settings.max_wait_seconds,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        stop_event=stop_event,
    )


def ledger_for(settings: Settings, pipeline: str, max_requests: int | None = None) -> QuotaLedger:
    """The quota ledger entry of `pipeline` for the settings' key."""
    return QuotaLedger(
        settings.state_dir / "ledger.json",
        settings.require_key().fingerprint,
        pipeline,
        daily_budget=settings.daily_request_budget,
        max_requests=max_requests,
    )


class CiklekClient:
    """Authenticated, throttled, retrying access to the Ciklek API.

    `sleep`, `jitter`, `clock` and `transport` are injectable so tests never wait and can
    assert the exact wait schedule; `stop_event` makes every wait interruptible (SIGTERM).
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey,
        *,
        limiter: RateLimiter | None = None,
        quota: QuotaLedger | None = None,
        log: RequestLog | None = None,
        max_attempts: int = 6,
        max_rate_limit_waits: int = 30,
        max_wait_seconds: float = 120.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)  # refuses plain HTTP off loopback
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.quota = quota
        self.log = log if log is not None else RequestLog()
        self.max_attempts = max_attempts
        self.max_rate_limit_waits = max_rate_limit_waits
        self.max_wait_seconds = max_wait_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._jitter = jitter if jitter is not None else (lambda: random.uniform(0.0, 0.25))
        self._clock = clock
        self._sleep_impl = sleep
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers={
                "Authorization": f"Bearer {api_key.reveal()}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"CiklekClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CiklekClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- waiting -------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """Interruptible sleep: a stop request ends any wait at once."""
        if self.stop_event.is_set():
            raise StopRequested("stop requested")
        if self._sleep_impl is not None:
            self._sleep_impl(seconds)
        elif self.stop_event.wait(max(0.0, seconds)):
            raise StopRequested("stop requested")

    def _backoff(self, failures: int) -> float:
        doubled: float = self.backoff_base * 2.0 ** (failures - 1)
        return min(self.backoff_max, doubled) + self._jitter()

    # ---- requests ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one logical request (retried as the policy says); return the parsed body."""
        endpoint = "/" + path.strip("/")
        counts = {"transient": 0, "rate_limited": 0}
        last: dict[str, Any] = {"status": None, "reason": ""}

        # Failures are counted where they happen (in `attempt`), not in `wait`/`stop`: tenacity
        # does not promise which of the two runs first, and the schedule must not depend on it.
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RateLimited):
                if exc.reset_at is not None:
                    self.limiter.block_until(exc.reset_at)
                    return max(0.0, exc.reset_at - self._clock()) + self._jitter()
                # Reset missing or already past: short exponential, never a hot loop.
                return self._backoff(counts["rate_limited"])
            return self._backoff(counts["transient"])

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RateLimited):
                return counts["rate_limited"] > self.max_rate_limit_waits
            return counts["transient"] >= self.max_attempts

        def sleep(seconds: float) -> None:
            self.sleep(seconds)
            self.log.add_wait(endpoint, seconds)  # only waits that really happened

        def attempt() -> Any:
            if self.stop_event.is_set():
                raise StopRequested("stop requested")
            blocked = self.limiter.blocked_until()
            if blocked is not None and blocked - self._clock() > self.max_wait_seconds:
                # The key's allowance is spent until a Reset hours away (daily quota): stop now
                # rather than let the limiter sleep until then.
                resume = dt.datetime.fromtimestamp(blocked, dt.UTC)
                raise QuotaExhausted(
                    f"no requests allowed on {endpoint} before {resume:%Y-%m-%dT%H:%MZ}",
                    resume_at=resume,
                )
            waited = self.limiter.acquire(self.sleep)
            if waited:
                self.log.add_wait(endpoint, waited)
            if self.quota is not None:
                self.quota.charge()
            try:
                response = self._http.request(
                    method, endpoint.lstrip("/"), params=params, json=json_body, headers=headers
                )
            except httpx.TransportError as exc:
                self.log.record(endpoint, type(exc).__name__)
                last.update(status=None, reason=type(exc).__name__)
                counts["transient"] += 1
                raise _Transient(f"{type(exc).__name__} (connection problem)", None) from None
            self.log.record(endpoint, response.status_code)
            self.limiter.observe(response.headers)
            last.update(status=response.status_code)
            try:
                return classify(
                    response, endpoint=endpoint, now=self._clock(), max_wait=self.max_wait_seconds
                )
            except _Transient as exc:
                last["reason"] = str(exc)
                counts["transient"] += 1
                raise
            except _RateLimited:
                counts["rate_limited"] += 1
                raise

        retrying = Retrying(
            retry=retry_if_exception_type((_Transient, _RateLimited)),
            wait=wait,
            stop=stop,
            sleep=sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient:
            raise CiklekUnavailable(
                f"{endpoint} still failing after {counts['transient']} attempts "
                f"(last: {last['reason'] or last['status']}); progress is kept, try again later",
                endpoint=endpoint,
                last_status=last["status"],
            ) from None
        except _RateLimited:
            raise CiklekUnavailable(
                f"{endpoint} still rate limited after {counts['rate_limited']} waits; "
                "another user of this key may be using the whole allowance",
                endpoint=endpoint,
                last_status=429,
            ) from None

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def fetch_page(
        self,
        path: str,
        *,
        limit: int,
        after: str | None = None,
        updated_since: str | None = None,
    ) -> Page:
        """One list page. `data: null` is an empty page; any other non-list `data` is fatal."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if updated_since is not None:
            params["updated_since"] = updated_since
        body = self.get(path, params)
        data = body.get("data")
        data = [] if data is None else data
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        if not isinstance(data, list):
            raise ApiError("list endpoint returned a non-list `data`", status=200, endpoint=path)
        next_cursor = meta.get("next_cursor")
        return Page(
            records=data,
            total=meta.get("total") if isinstance(meta.get("total"), int) else None,
            page=meta.get("page") if isinstance(meta.get("page"), int) else None,
            next_cursor=str(next_cursor) if next_cursor not in (None, "") else None,
            requested_after=after,
        )

    def paginate(
        self, path: str, *, limit: int, updated_since: str | None = None, after: str | None = None
    ) -> Iterator[Page]:
        """Follow `meta.next_cursor` until it is null."""
        while True:
            page = self.fetch_page(path, limit=limit, after=after, updated_since=updated_since)
            yield page
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def post(self, path: str, body: Any, *, idempotency_key: str | None = None) -> Any:
        """POST with an Idempotency-Key made once per logical call and reused on every retry."""
        key = idempotency_key or str(uuid.uuid4())
        return self.request("POST", path, json_body=body, headers={"Idempotency-Key": key})

    def create_order(
        self, order: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create an order; a retried call never creates a duplicate."""
        body = self.post("orders", dict(order), idempotency_key=idempotency_key)
        data = body["data"]
        return data if isinstance(data, dict) else {"data": data}
