"""What a response means: its body, a retry, or a typed error (`classify`), and JSON parsing.

Why one function: like a Singer tap's `validate_response`, every answer of the API goes through
`classify()`, which decides retriable vs fatal in one place with a one-line comment on each quirk
it handles; the client only acts on the verdict. `Transient`, `RateLimited` and `NotTheApi` are
the verdicts the client's retry policy acts on: they never leave `connector.api` (the client
turns them into `CiklekUnavailable` or `WrongBaseUrl`).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson

from connector.api.limiter import reset_instant
from connector.errors import (
    ApiError,
    BadRequest,
    MissingScope,
    NotFound,
    QuotaExhausted,
    Unauthorized,
    ValidationFailed,
)
from connector.printable import clean
from connector.timefmt import stamp

_FATAL: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: MissingScope,
    404: NotFound,
    422: ValidationFailed,
}

Record = dict[str, Any]  # one record as the API sent it: normalize.py types its fields
Body = dict[str, Any]  # a parsed envelope, {"data", "meta"}; callers pick their fields


class Transient(Exception):
    """A failure worth retrying with back-off (5xx, drop, timeout, garbled body)."""

    def __init__(self, reason: str, status: int | None) -> None:
        super().__init__(reason)
        self.status = status


class NotTheApi(Exception):
    """A 2xx web page (HTML) where a JSON list was expected: not the API at all."""


class RateLimited(Exception):
    """A 429 `rate_limited`; retry at `reset_at` (None when unknown, past or absurd)."""

    def __init__(self, reset_at: float | None) -> None:
        super().__init__("rate limited")
        self.reset_at = reset_at


@dataclass(frozen=True)
class Page:
    """One list page: parsed records plus the cursor that fetched it (for cheap resumes)."""

    records: list[Record]
    total: int | None
    page: int | None
    next_cursor: str | None
    requested_after: str | None


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, its body already read under the size cap and the deadline."""

    status: int
    reason: str
    headers: httpx.Headers
    content: bytes


def _exact_int(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # beyond int()'s digit limit: kept exact, so only its record is rejected
        return Decimal(text)


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19  # 19+ digits in a row may be an integer beyond 64 bits


def parse_json(content: bytes) -> object:
    """orjson for speed; stdlib json where integers could exceed 64 bits (they stay exact).

    orjson turns integers beyond 64 bits into floats *silently* (1e+38, not 10**38), so a body
    with any run of 19+ digits goes to the stdlib parser (a byte translate: ~1 µs per record).
    Raises ValueError for anything unparseable, a body nested too deep for either parser
    included (100,000 `[`): that is a garbled page, not a crash.
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
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None
    finally:
        if was_enabled:
            gc.enable()


def _cleaned(value: object) -> object:
    """A server-supplied JSON value with every string's control characters escaped."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if isinstance(value, dict):
        return {clean(str(k)): _cleaned(v) for k, v in value.items()}
    return value


def _error_fields(body: object) -> tuple[str | None, str, object]:
    """code, message, details of an error envelope, cleaned at ingestion (they get printed)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, "", None
    code = error.get("code")
    message = clean(str(error.get("message") or ""))
    return (clean(str(code)) if code is not None else None), message, _cleaned(error.get("details"))


def classify(reply: Reply, *, endpoint: str, now: float, max_wait: float) -> Body:
    """Return the parsed body of a good response, or raise what the response means.

    - 2xx with JSON holding `data` → the body.
    - 2xx whose body is not JSON (truncated, nested too deep) or lacks `data` → transient.
    - 429 `daily_quota_exceeded`, or a Reset further away than `max_wait` → QuotaExhausted:
      sleeping for hours is not a sync strategy.
    - 429 otherwise → wait until X-RateLimit-Reset, then retry (a Reset that is missing, past,
      non-finite or absurd counts as unknown: a short back-off).
    - 5xx, 408, or a non-JSON page with another status (a proxy's 502) → transient.
    - 400/401/403/404/422 → the typed fatal error, never retried, JSON body or not (a
      gateway's HTML 401 still means the key was refused); other 3xx/4xx → ApiError, fatal.
    """
    status = reply.status
    try:
        body = parse_json(reply.content)
    except ValueError:
        body = None
    if 200 <= status < 300:
        if body is None and "html" in reply.headers.get("content-type", "").lower():
            raise NotTheApi
        if not isinstance(body, dict) or "data" not in body:
            raise Transient(f"HTTP {status} with a body that is not a Ciklek envelope", status)
        return body
    code, message, details = _error_fields(body)
    if status == 429:
        reset = reset_instant(reply.headers.get("x-ratelimit-reset"), now)
        if code == "daily_quota_exceeded" or (reset is not None and reset - now > max_wait):
            resume = dt.datetime.fromtimestamp(reset, dt.UTC) if reset is not None else None
            when = f"; resume after {stamp(resume)}" if resume else ""
            raise QuotaExhausted(
                f"{'daily quota exhausted' if code == 'daily_quota_exceeded' else 'rate limited'}"
                f" on {endpoint}{when}",
                resume_at=resume,
            )
        raise RateLimited(reset if reset is not None and reset > now else None)
    if status >= 500 or status == 408 or (body is None and status < 300):
        raise Transient(f"HTTP {status}{f' {code}' if code else ''}", status)
    error_type = _FATAL.get(status, ApiError)
    message = message or clean(reply.reason) or "error"
    raise error_type(message, code=code, details=details, endpoint=endpoint, status=status)
