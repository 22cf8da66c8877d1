"""Per-key rate limiting: a fixed window aligned to the epoch plus a daily quota.

Windows are aligned to multiples of their length since the epoch, so ``X-RateLimit-Reset`` is
the window's end and a client that sleeps until it is guaranteed a fresh window. The daily
quota resets at 00:00 UTC of the sandbox clock (or on ``/_sandbox/new_day``). Requests rejected
with 429 are not counted, matching the contract's "back off and retry" advice.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LimitConfig
from .timefmt import US_PER_DAY, US_PER_SECOND, SandboxClock

RATE_LIMITED = "rate_limited"
DAILY_QUOTA_EXCEEDED = "daily_quota_exceeded"


@dataclass(slots=True)
class RateState:
    """What the three ``X-RateLimit-*`` headers report, and why a request was refused."""

    limit: int
    remaining: int
    reset: int
    refused: str | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset).encode()),
        ]


def _ceil_seconds(us: int) -> int:
    return -(-us // US_PER_SECOND)


class RateLimiter:
    """Counts requests per API key against the current window and the current day."""

    def __init__(self, limits: LimitConfig, clock: SandboxClock) -> None:
        self.limits = limits
        self.clock = clock
        self._windows: dict[str, tuple[int, int]] = {}
        self._daily: dict[str, int] = {}
        self._day = clock.now_us() // US_PER_DAY

    def _window(self, now_us: int) -> tuple[int, int]:
        """(index, end in unix seconds rounded up) of the window containing ``now_us``."""
        length = max(1, round(self.limits.window_seconds * US_PER_SECOND))
        index = now_us // length
        return index, _ceil_seconds((index + 1) * length)

    def _roll_day(self, now_us: int) -> None:
        day = now_us // US_PER_DAY
        if day != self._day:
            self._day = day
            self._daily.clear()

    def anonymous(self) -> RateState:
        """Headers for a request with no valid key: the default limit, nothing used."""
        _, reset = self._window(self.clock.now_us())
        return RateState(self.limits.window_limit, self.limits.window_limit, reset)

    def check(self, key: str) -> RateState:
        """Admit and count one request for ``key``, or say which limit refuses it."""
        now_us = self.clock.now_us()
        self._roll_day(now_us)
        index, reset = self._window(now_us)
        limit = self.limits.window_limit
        w_index, used = self._windows.get(key, (index, 0))
        if w_index != index:
            used = 0
        if self._daily.get(key, 0) >= self.limits.daily_quota:
            next_midnight = (now_us // US_PER_DAY + 1) * US_PER_DAY // US_PER_SECOND
            return RateState(limit, 0, next_midnight, DAILY_QUOTA_EXCEEDED)
        if used >= limit:
            return RateState(limit, 0, reset, RATE_LIMITED)
        used += 1
        self._windows[key] = (index, used)
        self._daily[key] = self._daily.get(key, 0) + 1
        return RateState(limit, max(0, limit - used), reset)

    def new_day(self) -> None:
        """Forget every key's daily count, as if midnight UTC had passed."""
        self._daily.clear()

    def counted_today(self) -> dict[str, int]:
        self._roll_day(self.clock.now_us())
        return dict(self._daily)
