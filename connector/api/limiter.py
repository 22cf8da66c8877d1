"""The shared rate limiter: throttle *before* the server says no.

Why header-driven: the server's `X-RateLimit-Remaining` / `X-RateLimit-Reset` are the truth about
the current window (other users of the key spend it too), so every response re-synchronises the
limiter; a local sliding window at the documented rate only covers the time before the first
response and servers that omit the headers. One limiter per API host and key per process (see
`limiter_for`): every resource and thread shares it, so parallel work can never overrun the key.
"""

from __future__ import annotations

import collections
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Sleep = Callable[[float], None]
_RESYNC_PAUSE = 0.05  # seconds to wait for a response's headers when the allowance is reserved
# The furthest a believable Reset lies: the daily window ends at the next 00:00 UTC (< 1 day);
# a day of slack covers clock skew. Anything later (1e20, a huge integer) is treated as missing.
MAX_RESET_AHEAD = 2 * 86_400.0
# The earliest: an epoch before 2001 is no Reset of this API (a negative, or seconds-until).
MIN_RESET = 1_000_000_000.0


def reset_instant(value: str | None, now: float) -> float | None:
    """`X-RateLimit-Reset` as a unix time, or None when missing or not believable.

    Not finite (`inf`, `nan`), negative, before 2001 or more than two days ahead: a server
    saying that cannot be taken at its word, and waiting on it would mean a crash (a date
    beyond year 9999), a hot loop or hours of sleep. Treated as missing, the caller falls back
    to its short back-off.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < MIN_RESET or number - now > MAX_RESET_AHEAD:
        return None
    return float(math.ceil(number))


@dataclass(frozen=True)
class RateLimitHeaders:
    """What one response's `X-RateLimit-*` headers said, as sent (None where missing or not a
    number): the API's own view of the key's allowance, which a scheduler shows beside the
    connector's daily budget (the two differ: other users of the key spend the API's too)."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # unix time, as `reset_instant` believes it
    status: int  # the response's HTTP status (429: the allowance was spent)

    @classmethod
    def parse(cls, headers: Mapping[str, str], status: int, now: float) -> RateLimitHeaders | None:
        """The headers of one response; None when it carried none of the three."""
        limit = _int_header(headers, "x-ratelimit-limit")
        remaining = _int_header(headers, "x-ratelimit-remaining")
        reset_at = reset_instant(headers.get("x-ratelimit-reset"), now)
        if limit is None and remaining is None and reset_at is None:
            return None
        return cls(limit, remaining, reset_at, status)


class RateLimiter:
    """Blocks `acquire()` until sending one more request will not exceed the window."""

    def __init__(
        self,
        per_minute: int = 120,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._jitter = jitter if jitter is not None else (lambda: random.uniform(0.05, 0.25))
        self._per_minute = per_minute
        self._sent: collections.deque[float] = collections.deque()
        self._limit: int | None = None
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._passed: float | None = None  # the last Reset we rolled past
        self._window: float | None = None  # seconds between two Resets: the window's length
        self._lowest: int | None = None  # the lowest Remaining the current window's answers told
        # Requests in flight: every reservation is numbered (a ticket the reserving thread
        # keeps) until its response's headers come back (`observe`) or it fails (`settle`).
        self._seq = 0
        self._outstanding: dict[int, float] = {}  # ticket -> when it was reserved
        self._local = threading.local()

    def delay(self) -> float:
        """Seconds to wait before the next request may go; reserves a slot when it returns 0."""
        with self._lock:
            now = self._clock()
            if self._reset_at is not None and now >= self._reset_at:
                # The server's window rolled over: a fresh allowance until the next response.
                self._remaining = self._limit
                self._passed, self._reset_at = self._reset_at, None
            if self._remaining is not None and self._remaining <= 0:
                # No reset known (window just rolled over, allowance reserved by other threads):
                # wait briefly for a response to re-synchronise rather than overrun the window.
                # (Never 0 here: 0 means "go, a slot is reserved".)
                if self._reset_at is not None:
                    return self._reset_at - now + self._jitter()
                if self._outstanding:
                    return max(_RESYNC_PAUSE, self._jitter())
                # Nothing in flight will ever answer (the requests since the rollover failed
                # without headers): the documented rate until a response says more.
                self._remaining = None
            while self._sent and now - self._sent[0] >= 60.0:
                self._sent.popleft()
            # The documented rate only until the server's headers say otherwise: once they
            # are known they are the truth (a plan may allow more than the documented 120/min).
            if self._remaining is None and len(self._sent) >= self._per_minute:
                return self._sent[0] + 60.0 - now
            self._sent.append(now)
            if self._remaining is not None:
                self._remaining -= 1
            self._seq += 1
            self._forget(getattr(self._local, "ticket", None), now)
            self._local.ticket = self._seq
            self._outstanding[self._seq] = now
            return 0.0

    def acquire(self, sleep: Sleep) -> float:
        """Wait (through `sleep`) until a request may be sent; returns the seconds waited."""
        waited = 0.0
        while True:
            wait = self.delay()
            if wait <= 0:
                return waited
            sleep(wait)
            waited += wait

    def observe(self, headers: Mapping[str, str]) -> None:
        """Re-synchronise from a response's X-RateLimit-* headers (any status).

        A header counts the requests the server admitted up to the one it answers, not those
        still in flight (several workers send at once): the allowance left *now* is taken as
        the window's lowest Remaining so far less every request of ours still in flight. That
        is exact when answers come back in the order requests were admitted and errs low
        otherwise, until nothing is in flight: then it is exact again. Never high: a
        self-caused 429 costs a whole window's wait.
        """
        limit = _int_header(headers, "x-ratelimit-limit")
        remaining = _int_header(headers, "x-ratelimit-remaining")
        reset_at = reset_instant(headers.get("x-ratelimit-reset"), self._clock())
        ticket: int | None = getattr(self._local, "ticket", None)
        self._local.ticket = None
        with self._lock:
            self._forget(ticket, self._clock())
            if remaining is None or reset_at is None:
                return
            if limit is not None:
                self._limit = limit
            if self._passed is not None and reset_at <= self._passed:
                return  # a late response from a window that already ended: it says nothing now
            if self._reset_at is not None and reset_at < self._reset_at:
                return  # an older window than the one we know
            rolled = self._reset_at is None and self._passed is not None
            if self._reset_at is None or reset_at > self._reset_at:  # a window new to us
                if rolled:
                    self._learn_window(self._passed, reset_at)
                # After our own rollover, our count since then bounds it too.
                bound = self._remaining if rolled else None
                self._reset_at, self._lowest = reset_at, remaining
            else:
                bound = self._remaining
                self._lowest = remaining if self._lowest is None else min(self._lowest, remaining)
            # The window's lowest Remaining is the latest the server told (answers may come
            # out of order); less our requests still in flight. With none in flight it is
            # exact, and may give back what an earlier, cautious estimate held back.
            estimate = max(0, self._lowest - len(self._outstanding))
            if self._outstanding and bound is not None:
                estimate = min(bound, estimate)
            self._remaining = estimate

    def _learn_window(self, earlier: float | None, later: float) -> None:
        """(Under the lock.) The Reset we rolled past and the next window's: apart by one
        window or more (idle windows between); the shortest gap seen. Only rollovers count: a
        server whose Reset moves with every answer says nothing of a window's length."""
        if earlier is not None and later > earlier:
            gap = later - earlier
            self._window = gap if self._window is None else min(self._window, gap)

    def spacing(self) -> float:
        """Seconds between requests at the full allowance: the window over its limit, as the
        headers tell; the documented rate until they do."""
        with self._lock:
            if self._window is not None and self._limit:
                return self._window / self._limit
            return 60.0 / self._per_minute

    def settle(self) -> None:
        """This thread's request ended without headers (a dropped connection, a timeout)."""
        ticket: int | None = getattr(self._local, "ticket", None)
        self._local.ticket = None
        with self._lock:
            self._forget(ticket, self._clock())

    def _forget(self, ticket: int | None, now: float) -> None:
        """(Under the lock.) A ticket answered or abandoned; and any that outlived a minute:
        whatever happened to it, its window is over."""
        if ticket is not None:
            self._outstanding.pop(ticket, None)
        for old in [t for t, at in self._outstanding.items() if now - at > 60.0]:
            del self._outstanding[old]

    def block_until(self, reset_at: float) -> None:
        """After a 429: no request goes before `reset_at`."""
        with self._lock:
            self._remaining = 0
            self._reset_at = reset_at

    def blocked_until(self) -> float | None:
        """The Reset to wait for while the server says the allowance is spent, else None."""
        with self._lock:
            if self._remaining is not None and self._remaining <= 0:
                return self._reset_at
            return None

    @property
    def remaining(self) -> int | None:
        return self._remaining


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return math.ceil(number) if math.isfinite(number) else None


_REGISTRY: dict[tuple[str, str], RateLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def limiter_for(base_url: str, key_fingerprint: str, per_minute: int = 120) -> RateLimiter:
    """The process-wide limiter of one API key at one API host (created on first use).

    Why the host too: a window is the server's count for a key, so the same key at two hosts
    (production and a sandbox, two sandboxes) has two windows; one limiter for both would carry
    one server's `Remaining` and `Reset` into requests to the other.
    """
    with _REGISTRY_LOCK:
        limiter = _REGISTRY.get((base_url, key_fingerprint))
        if limiter is None:
            limiter = _REGISTRY[(base_url, key_fingerprint)] = RateLimiter(per_minute)
        return limiter
