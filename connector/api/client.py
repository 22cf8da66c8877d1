"""CiklekClient: every HTTP request of the connector goes through here.

Why one client: auth, throttling, the retry policy, request counting and the quota ledger must
apply to every request the same way, whichever command sends it. The retry policy is tenacity
strategies (`_Policy.wait`, `_Policy.stop`) fed by one classification function,
`connector.api.responses.classify()`, which decides retriable vs fatal for every response.

Why it distrusts the server: every request URL is `base_url` + a relative path (the key goes
nowhere else); a body is read as a stream under a size cap and an overall deadline, so a
compression bomb or a trickled reply stops early; text from the server is escaped before it can
reach a terminal, a log or a stored message.
"""

from __future__ import annotations

import datetime as dt
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connector.api.bounded_body import BodyTooLarge, BoundedDecoder
from connector.api.ledger import QuotaLedger, RequestLog
from connector.api.limiter import RateLimiter, RateLimitHeaders, Sleep, limiter_for
from connector.api.responses import (
    Body,
    NotTheApi,
    Page,
    RateLimited,
    Record,
    Reply,
    Transient,
    classify,
)
from connector.api.tls import tls_context
from connector.config.redaction import ApiKey
from connector.config.settings import Settings
from connector.config.urls import is_plain_http_loopback, normalize_base_url, relative_path
from connector.errors import (
    CertificateNotTrusted,
    CiklekUnavailable,
    ConfigError,
    ContractViolation,
    NotFound,
    QuotaExhausted,
    StopRequested,
    WrongBaseUrl,
)
from connector.printable import clean
from connector.timefmt import stamp

USER_AGENT = "ciklek-connector/0.1 (+dlt)"
# A page holds at most 100 records; 16 MiB decoded is 160 KB per record. A body beyond it is a
# broken contract (or a compression bomb), stopped while streaming, before it fills memory.
MAX_BODY_BYTES = 16 * 1024 * 1024
# One gzip or deflate layer inflates at most ~1,000x per network read; `br`/`zstd` (if their
# packages are installed) and stacked encodings have no such bound, so we never accept them.
_ACCEPTED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})

Params = Mapping[str, str | int]
EventSink = Callable[[str, Mapping[str, object]], None]


class _DeadlinePassed(Exception):
    """Internal: the request outlived `request_deadline_seconds` (a trickled body)."""


def _key(api_key: ApiKey | str) -> ApiKey:
    """The key wrapped (a plain string from a Python caller is registered as a secret too)."""
    return api_key if isinstance(api_key, ApiKey) else ApiKey(api_key.strip())


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind an httpx ConnectError, if that is the cause."""
    seen: BaseException | None = exc
    for _ in range(10):  # a bounded walk down __cause__/__context__
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
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
        limiter=limiter_for(settings.base_url, key.fingerprint, settings.requests_per_minute),
        quota=quota,
        log=log,
        max_attempts=settings.max_attempts,
        max_rate_limit_waits=settings.max_rate_limit_waits,
        max_wait_seconds=settings.max_wait_seconds,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        request_deadline_seconds=settings.request_deadline_seconds,
        stop_event=stop_event,
    )


@dataclass
class _Tally:
    """What one logical request has been through.

    Failures are counted where they happen (in the attempt), not in the wait/stop strategies:
    tenacity does not promise which of the two runs first, and the schedule must not depend on
    it.
    """

    endpoint: str
    url: str = ""  # the full URL, for messages: an unreachable host must be named
    transient: int = 0
    rate_limited: int = 0
    blind: int = 0  # 429s without a usable Reset: we cannot know when the window ends
    last_status: int | None = None
    last_reason: str = ""

    def failed(self, reason: str, status: int | None) -> Transient:
        self.transient += 1
        self.last_status, self.last_reason = status, reason
        return Transient(reason, status)

    def unavailable(self) -> CiklekUnavailable:
        return CiklekUnavailable(
            f"{self.url or self.endpoint} still failing after {self.transient} attempts "
            f"(last: {self.last_reason or self.last_status}); try again later",
            endpoint=self.endpoint,
            last_status=self.last_status,
        )

    def still_rate_limited(self) -> CiklekUnavailable:
        return CiklekUnavailable(
            f"{self.endpoint} still rate limited after {self.rate_limited} waits; "
            "another user of this key may be using the whole allowance",
            endpoint=self.endpoint,
            last_status=429,
        )


@dataclass(frozen=True)
class _Policy:
    """The retry policy of one logical request, as tenacity strategies over its tally."""

    client: CiklekClient
    tally: _Tally

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            if exc.reset_at is not None:
                self.client.limiter.block_until(exc.reset_at)
                return max(0.0, exc.reset_at - self.client.clock()) + self.client.jitter()
            # Reset missing, past or absurd: short exponential, never a hot loop.
            return self.client.backoff(self.tally.rate_limited)
        return self.client.backoff(self.tally.transient)

    def stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            # Waits for a known Reset are cheap and bounded by the window; blind ones get the
            # transient budget, so a server that never says when costs seconds, not minutes.
            return (
                self.tally.rate_limited > self.client.max_rate_limit_waits
                or self.tally.blind >= self.client.max_attempts
            )
        return self.tally.transient >= self.client.max_attempts

    def sleep(self, seconds: float) -> None:
        self.client.tell_retry(self.tally, seconds)
        self.client.sleep(seconds)
        self.client.log.add_wait(self.tally.endpoint, seconds)  # only waits that happened

    def retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type((Transient, RateLimited)),
            wait=self.wait,
            stop=self.stop,
            sleep=self.sleep,
            reraise=True,
        )


class CiklekClient:
    """Authenticated, throttled, retrying access to the Ciklek API.

    `sleep`, `jitter`, `clock`, `monotonic` and `transport` are injectable so tests never wait
    and can assert the exact wait schedule; `stop_event` makes every wait interruptible.
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey | str,
        *,
        limiter: RateLimiter | None = None,
        quota: QuotaLedger | None = None,
        log: RequestLog | None = None,
        max_attempts: int = 6,
        max_rate_limit_waits: int = 30,
        max_wait_seconds: float = 120.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        request_deadline_seconds: float = 120.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        stop_event: threading.Event | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)  # refuses plain HTTP off loopback
        # Waits and retries are told as they happen (a line each without a terminal, a JSON
        # object with --log-format json): minutes of silence read as a hang.
        self.on_event = on_event
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.quota = quota
        self.log = log if log is not None else RequestLog()
        # The last response's X-RateLimit-* headers: what the API says is left of the key's
        # allowance (shown beside our own daily budget, which counts only our requests).
        self.last_rate_limit: RateLimitHeaders | None = None
        # Seconds an exchange takes (moving average, limiter waits excluded): whether a second
        # worker could use allowance one leaves unused (connector/traversal/range_workers.py).
        self.latency: float | None = None
        self.max_attempts = max_attempts
        self.max_rate_limit_waits = max_rate_limit_waits
        self.max_wait_seconds = max_wait_seconds
        self.request_deadline_seconds = request_deadline_seconds
        self.max_body_bytes = max_body_bytes
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.jitter = jitter if jitter is not None else (lambda: random.uniform(0.0, 0.25))
        self.clock = clock
        self._monotonic = monotonic
        self._sleep_impl = sleep
        self._timeouts = (connect_timeout, read_timeout)
        self._base = httpx.URL(self.base_url + "/")
        trust_env = not is_plain_http_loopback(self.base_url)
        self._http = httpx.Client(
            base_url=self._base,
            headers={
                "Authorization": f"Bearer {_key(api_key).reveal()}",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
            # The sandbox on loopback over plain HTTP: HTTP_PROXY must never carry the key off
            # this machine in clear text. (https keeps the environment: proxies, CA bundles.)
            trust_env=trust_env,
            verify=tls_context(trust_env),  # built once per process (why: connector/api/tls.py)
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

    def tell(self, event: str, **fields: object) -> None:
        if self.on_event is not None:
            self.on_event(event, fields)

    def tell_retry(self, tally: _Tally, seconds: float) -> None:
        """A retry or a rate-limit wait about to start, with the URL it is for."""
        url = tally.url or self.base_url + tally.endpoint
        if tally.last_status == 429:
            self.tell("wait", reason="rate_limited", seconds=round(seconds, 1), url=url)
        else:
            self.tell(
                "retry",
                attempt=tally.transient + 1,
                max_attempts=self.max_attempts,
                reason=tally.last_reason or f"HTTP {tally.last_status}",
                seconds=round(seconds, 1),
                url=url,
            )

    def _paced_sleep(self, seconds: float) -> None:
        """The limiter's pacing sleep; a wait of a second or more is told first."""
        if seconds >= 1.0:
            self.tell("wait", reason="rate_limit_window", seconds=round(seconds, 1))
        self.sleep(seconds)

    def backoff(self, failures: int) -> float:
        doubled: float = self.backoff_base * 2.0 ** (failures - 1)
        return min(self.backoff_max, doubled) + self.jitter()

    # ---- requests ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Body:
        """Send one logical request (retried as the policy says); return the parsed body."""
        endpoint = "/" + relative_path(path, "request path").strip("/")
        request = self._http.build_request(
            method, endpoint.lstrip("/"), params=params, json=json_body, headers=headers
        )
        self._require_under_base(request.url)
        tally = _Tally(endpoint, url=self.base_url + endpoint)

        def attempt() -> Body:
            self._gate(endpoint)
            reply = self._send(request, tally)
            tally.last_status = reply.status
            try:
                return classify(
                    reply, endpoint=endpoint, now=self.clock(), max_wait=self.max_wait_seconds
                )
            except Transient as exc:
                raise tally.failed(str(exc), reply.status) from None
            except RateLimited as exc:
                tally.rate_limited += 1
                tally.blind += int(exc.reset_at is None)
                raise

        try:
            return _Policy(self, tally).retrying()(attempt)
        except NotTheApi:
            raise WrongBaseUrl(self.base_url_hint(f"{endpoint} answered a web page")) from None
        except Transient:
            raise tally.unavailable() from None
        except RateLimited:
            raise tally.still_rate_limited() from None

    def base_url_hint(self, what: str) -> str:
        return f"{what}: is `base_url` right? it should end in /v1: {self.base_url}"

    def _require_under_base(self, url: httpx.URL) -> None:
        """The one URL rule, checked on the URL about to be sent: base_url + a relative path."""
        base = self._base
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or not (
            url.raw_path.startswith(base.raw_path)
        ):
            raise ConfigError(f"refusing a request outside base_url {self.base_url!r}")

    def _gate(self, endpoint: str) -> None:
        """Before each attempt: a stop request, a key blocked for hours, the limiter, the ledger."""
        if self.stop_event.is_set():
            raise StopRequested("stop requested")
        blocked = self.limiter.blocked_until()
        if blocked is not None and blocked - self.clock() > self.max_wait_seconds:
            # The key's allowance is spent until a Reset hours away (daily quota): stop now
            # rather than let the limiter sleep until then.
            resume = dt.datetime.fromtimestamp(blocked, dt.UTC)
            raise QuotaExhausted(
                f"no requests allowed on {endpoint} before {stamp(resume)}",
                resume_at=resume,
            )
        waited = self.limiter.acquire(self._paced_sleep)
        if waited:
            self.log.add_wait(endpoint, waited)
        if self.quota is not None:
            self.quota.charge()

    def _send(self, request: httpx.Request, tally: _Tally) -> Reply:
        """One HTTP exchange under the overall deadline; transport trouble becomes transient."""
        deadline = self._monotonic() + self.request_deadline_seconds
        connect, read = (min(t, self.request_deadline_seconds) for t in self._timeouts)
        request.extensions["timeout"] = httpx.Timeout(read, connect=connect).as_dict()
        started = self._monotonic()
        try:
            return self._exchange(request, tally, deadline)
        finally:
            self.limiter.settle()  # (a no-op once `observe` had the response's headers)
            took = self._monotonic() - started
            self.latency = took if self.latency is None else 0.7 * self.latency + 0.3 * took

    def _exchange(self, request: httpx.Request, tally: _Tally, deadline: float) -> Reply:
        endpoint, status = tally.endpoint, None
        try:
            response = self._http.send(request, stream=True)
            status = response.status_code
            try:
                content = self._read_body(response, endpoint, deadline)
            finally:
                response.close()
        except httpx.TransportError as exc:
            failure = _certificate_failure(exc)
            if failure is not None:
                raise CertificateNotTrusted(
                    f"certificate not trusted: check SSL_CERT_FILE / your proxy "
                    f"({self._base.host}: {clean(failure.verify_message or str(failure))})"
                ) from None
            self.log.record(endpoint, type(exc).__name__)
            raise tally.failed(f"{type(exc).__name__} (connection problem)", None) from None
        except httpx.DecodingError:  # a gzip body that does not inflate: a garbled page
            self.log.record(endpoint, "DecodingError")
            raise tally.failed("a body that does not decode", status) from None
        except _DeadlinePassed:
            self.log.record(endpoint, "DeadlineExceeded")
            reason = f"over the {self.request_deadline_seconds:g} s request_deadline_seconds"
            raise tally.failed(reason, status) from None
        self.log.record(endpoint, response.status_code)
        self.limiter.observe(response.headers)
        seen = RateLimitHeaders.parse(response.headers, response.status_code, self.clock())
        self.last_rate_limit = seen or self.last_rate_limit
        return Reply(response.status_code, response.reason_phrase, response.headers, content)

    def _read_body(self, response: httpx.Response, endpoint: str, deadline: float) -> bytes:
        """The decoded body, streamed: stops at the size cap and at the overall deadline."""
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in _ACCEPTED_ENCODINGS:
            raise ContractViolation(
                f"Content-Encoding {clean(encoding)!r} was not asked for (gzip, deflate): its "
                "decoded size cannot be bounded",
                status=response.status_code,
                endpoint=endpoint,
            )
        decoder = BoundedDecoder(encoding, self.max_body_bytes)
        body = bytearray()
        # A response built in memory (a test transport) is read already: httpx decoded it.
        chunks = [response.content] if response.is_stream_consumed else None
        try:
            for raw in chunks or response.iter_raw():
                body += decoder.feed(raw) if chunks is None else decoder.feed_decoded(raw)
                if self._monotonic() > deadline:
                    raise _DeadlinePassed
        except BodyTooLarge:
            raise ContractViolation(
                f"response body larger than the {self.max_body_bytes:,}-byte cap once "
                "decoded (max_body_bytes; a page of 100 records is far smaller): a broken "
                "contract or a compression bomb",
                status=response.status_code,
                endpoint=endpoint,
            ) from None
        if self._monotonic() > deadline:
            raise _DeadlinePassed
        return bytes(body)

    def get(self, path: str, params: Params | None = None) -> Body:
        return self.request("GET", path, params=params)

    def fetch_page(
        self,
        path: str,
        *,
        limit: int,
        after: str | None = None,
        updated_since: str | None = None,
    ) -> Page:
        """One list page. `data: null` is an empty page; any other non-list `data`, or more
        records than `limit`, is a broken contract (ContractViolation, never retried)."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if updated_since is not None:
            params["updated_since"] = updated_since
        try:
            body = self.get(path, params)
        except NotFound:
            # Every list exists under the right base URL: a 404 means the URL is wrong.
            endpoint = "/" + path.strip("/")
            raise WrongBaseUrl(self.base_url_hint(f"{endpoint} answered 404")) from None
        data = body.get("data")
        data = [] if data is None else data
        endpoint = "/" + path.strip("/")
        if not isinstance(data, list):
            raise ContractViolation("list endpoint returned a non-list `data`", endpoint=endpoint)
        if len(data) > limit:
            raise ContractViolation(
                f"{len(data)} records on one page for limit={limit}: more records per page "
                "than the limit the API was sent",
                endpoint=endpoint,
            )
        meta = body.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        next_cursor, total, page = meta.get("next_cursor"), meta.get("total"), meta.get("page")
        return Page(
            records=data,
            total=total if isinstance(total, int) else None,
            page=page if isinstance(page, int) else None,
            next_cursor=str(next_cursor) if next_cursor not in (None, "") else None,
            requested_after=after,
        )

    def post(self, path: str, body: object, *, idempotency_key: str | None = None) -> Body:
        """POST with an Idempotency-Key made once per logical call and reused on every retry."""
        key = idempotency_key or str(uuid.uuid4())
        return self.request("POST", path, json_body=body, headers={"Idempotency-Key": key})

    def create_order(
        self, order: Mapping[str, object], *, idempotency_key: str | None = None
    ) -> Record:
        """Create an order; a retried call never creates a duplicate."""
        body = self.post("orders", dict(order), idempotency_key=idempotency_key)
        data = body["data"]
        return data if isinstance(data, dict) else {"data": data}
