"""The shared RateLimiter: throttle before the server says no, in fake time.

The thread test runs a small discrete-event clock: virtual time advances only when every worker
is asleep, so a request never "arrives" in a later window than the one it was admitted in
(which a real clock could only promise statistically).
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from typing import Any

import httpx
import pytest

from connector.api.client import CiklekClient
from connector.api.ledger import RequestLog
from connector.api.limiter import RateLimiter, limiter_for
from connector.config.redaction import ApiKey
from tests.unit.fake_time import T0, FakeTime


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(int(reset)),
    }


def admitted_without_wait(limiter: RateLimiter, most: int = 1000) -> int:
    """How many requests the limiter lets through before it asks for a wait."""
    count = 0
    while count < most and limiter.delay() == 0:
        count += 1
    return count


def test_waits_until_reset_when_remaining_reaches_zero_and_never_before() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(120, 3, T0 + 42))
    for _ in range(3):
        assert limiter.acquire(ft.sleep) == 0.0
    assert ft.sleeps == []
    assert limiter.acquire(ft.sleep) == pytest.approx(42.0)
    assert ft.sleeps == [42.0]


def test_server_saying_remaining_zero_blocks_until_reset_plus_jitter() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.25)
    limiter.observe(headers(120, 0, T0 + 7))
    assert limiter.acquire(ft.sleep) == pytest.approx(7.25)
    assert ft.sleeps == [7.25]


def test_after_reset_the_full_limit_is_available_again() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(8, 0, T0 + 10))
    ft.now = T0 + 10
    assert admitted_without_wait(limiter) == 8
    assert limiter.remaining == 0


def test_headers_resynchronise_the_allowance_downwards() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(120, 50, T0 + 30))
    # Another user of the key spent most of the window: the next response says so.
    limiter.observe(headers(120, 2, T0 + 30))
    assert admitted_without_wait(limiter) == 2


def test_later_window_replaces_the_old_allowance() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(120, 0, T0 + 5))
    limiter.observe(headers(120, 4, T0 + 65))  # a response from the next window
    assert admitted_without_wait(limiter) == 4


def test_a_late_response_from_an_ended_window_grants_no_extra_requests() -> None:
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(8, 0, T0 + 10))
    ft.now = T0 + 10  # the window rolled over: 8 fresh requests
    assert admitted_without_wait(limiter, most=3) == 3
    # A response to a request sent in the old window arrives only now.
    limiter.observe(headers(8, 0, T0 + 10))
    assert admitted_without_wait(limiter) == 5


def test_documented_rate_holds_before_any_header_is_seen() -> None:
    ft = FakeTime()
    limiter = RateLimiter(3, clock=ft.clock, jitter=lambda: 0.0)
    for _ in range(3):
        assert limiter.acquire(ft.sleep) == 0.0
    ft.now += 20
    assert limiter.acquire(ft.sleep) == pytest.approx(40.0)  # the first slot frees at +60 s


def test_limiter_for_gives_one_limiter_per_key_and_host() -> None:
    first = limiter_for("https://api.test/v1", "key-fp-test-a")
    assert limiter_for("https://api.test/v1", "key-fp-test-a") is first
    assert limiter_for("https://api.test/v1", "key-fp-test-b") is not first
    # The same key at another host (a sandbox, another region) has its own window.
    assert limiter_for("http://127.0.0.1:8080/v1", "key-fp-test-a") is not first


# ---- many threads, one limiter, a fake server with a fixed window --------------------------


class VirtualTime:
    """Discrete-event time: `sleep` blocks until every worker sleeps, then jumps to the earliest
    wake-up. `clock` never moves while any worker is running."""

    def __init__(self, workers: int, start: float = T0) -> None:
        self.now = start
        self._cond = threading.Condition()
        self._running = workers
        self._wakeups: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._cond:
            wake = self.now + max(0.0, seconds)
            heapq.heappush(self._wakeups, wake)
            self._running -= 1
            self._advance()
            while self.now < wake:
                self._cond.wait()

    def done(self) -> None:
        with self._cond:
            self._running -= 1
            self._advance()

    def _advance(self) -> None:
        if self._running > 0 or not self._wakeups:
            return
        self.now = max(self.now, self._wakeups[0])
        while self._wakeups and self._wakeups[0] <= self.now:
            heapq.heappop(self._wakeups)
            self._running += 1  # counted as running before it even wakes
        self._cond.notify_all()


class WindowServer:
    """A fixed-window rate limit like Ciklek's: `limit` per `length` s, windows on the epoch."""

    def __init__(self, vt: VirtualTime, limit: int, length: float) -> None:
        self.vt, self.limit, self.length = vt, limit, length
        self.lock = threading.Lock()
        self.per_window: Counter[int] = Counter()
        self.statuses: Counter[int] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/orders"
        with self.lock:
            index = int(self.vt.now // self.length)
            reset = (index + 1) * self.length
            used = self.per_window[index]
            if used >= self.limit:
                self.statuses[429] += 1
                body: dict[str, Any] = {"error": {"code": "rate_limited", "message": "slow"}}
                return httpx.Response(429, json=body, headers=headers(self.limit, 0, reset))
            self.per_window[index] = used + 1
            self.statuses[200] += 1
            return httpx.Response(
                200,
                json={"data": [], "meta": {}},
                headers=headers(self.limit, self.limit - used - 1, reset),
            )


def test_threads_sharing_one_limiter_never_exceed_the_server_window() -> None:
    threads, per_thread, limit, length = 4, 15, 8, 10.0
    vt = VirtualTime(threads)
    server = WindowServer(vt, limit, length)
    limiter = RateLimiter(clock=vt.clock, jitter=lambda: 0.0)
    log = RequestLog()
    client = CiklekClient(
        "https://api.ciklek.test/v1",
        ApiKey("bsk_test_threads"),
        limiter=limiter,
        log=log,
        transport=httpx.MockTransport(server),
        sleep=vt.sleep,
        jitter=lambda: 0.0,
        clock=vt.clock,
    )
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                client.get("orders")
        except BaseException as exc:
            failures.append(exc)
        finally:
            vt.done()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    client.close()
    assert not any(w.is_alive() for w in workers)
    assert failures == []
    total = threads * per_thread
    assert server.statuses == Counter({200: total})
    assert log.rate_limited == 0
    assert max(server.per_window.values()) <= limit
    # Full use of the allowance: 60 requests at 8 per window need exactly 8 windows.
    assert len(server.per_window) == -(-total // limit)
    first = int(T0 // length)
    assert sorted(server.per_window) == list(range(first, first + len(server.per_window)))


def test_first_header_after_a_rollover_keeps_the_requests_still_in_flight() -> None:
    """Three requests go at the window's start; the first answer says 4 of 5 left (it was
    admitted first). Two more may go, not four: the other two are in flight, not yet counted."""
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(5, 0, T0 + 5))
    ft.now = T0 + 5  # the window rolled over: a fresh allowance of 5
    answer, finish = threading.Event(), threading.Event()
    reserved = threading.Semaphore(0)

    def worker(first: bool) -> None:
        assert limiter.delay() == 0.0
        reserved.release()
        if first:
            answer.wait(5)
            limiter.observe(headers(5, 4, T0 + 10))
            finish.set()

    threads = [threading.Thread(target=worker, args=(n == 0,)) for n in range(3)]
    for t in threads:
        t.start()
        assert reserved.acquire(timeout=5)  # each in flight, one per worker
    answer.set()
    assert finish.wait(5)
    assert admitted_without_wait(limiter) == 2
    for t in threads:
        t.join()


def test_a_header_lower_than_our_own_count_wins() -> None:
    """Another user of the key spent part of the window: its answer is the truth."""
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(5, 0, T0 + 5))
    ft.now = T0 + 5
    assert admitted_without_wait(limiter, most=1) == 1  # our count: 4 left
    limiter.observe(headers(5, 1, T0 + 10))
    assert admitted_without_wait(limiter) == 1


class InFlight:
    """Workers that each reserve one request now (in the order of `answers`) and observe its
    answer (`Remaining` = `answers[n]`) only when told: answers in any order."""

    def __init__(self, limiter: RateLimiter, limit: int, answers: dict[int, int]) -> None:
        self.go = {n: threading.Event() for n in answers}
        self.done = {n: threading.Event() for n in answers}
        reserved = threading.Semaphore(0)

        def worker(n: int) -> None:
            assert limiter.delay() == 0.0
            reserved.release()
            self.go[n].wait(5)
            limiter.observe(headers(limit, answers[n], T0 + 5))
            self.done[n].set()

        self.threads = []
        for n in sorted(answers):
            self.threads.append(threading.Thread(target=worker, args=(n,)))
            self.threads[-1].start()
            assert reserved.acquire(timeout=5)  # reserved in order, one in flight per worker

    def answer(self, n: int) -> None:
        self.go[n].set()
        assert self.done[n].wait(5)

    def join(self) -> None:
        for t in self.threads:
            t.join(5)


def test_with_nothing_in_flight_the_windows_lowest_answer_is_exact_again() -> None:
    """Two workers (limit 10); the server admits 1 then 2, but 2's answer comes first: 8 left
    less 1 still in flight = 7, cautious. Once 1's answer is in, nothing is in flight: 8."""
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(10, 10, T0 + 5))
    workers = InFlight(limiter, 10, {1: 9, 2: 8})
    workers.answer(2)
    assert limiter.remaining == 7  # cautious: worker 1 may have been admitted after 2
    workers.answer(1)
    assert limiter.remaining == 8  # exact: 2 of 10 admitted, nothing in flight
    workers.join()


def test_the_first_header_of_a_run_leaves_out_requests_reserved_after_it() -> None:
    """Three workers reserve before any answer; the first answer (remaining 4 of 5) counts only
    its own request: the two reserved after it are in flight, so two more may go, not four."""
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    reserved, answered = threading.Event(), threading.Event()

    def first_worker() -> None:
        assert limiter.delay() == 0.0
        reserved.set()
        answered.wait(5)
        limiter.observe(headers(5, 4, T0 + 5))  # its answer: the only one in the header

    first = threading.Thread(target=first_worker)
    first.start()
    assert reserved.wait(5)
    for _ in range(2):
        other = threading.Thread(target=limiter.delay)
        other.start()
        other.join()
    answered.set()
    first.join()
    assert admitted_without_wait(limiter) == 2  # taking the header alone let 4 go: two 429s


def test_answers_out_of_admission_order_never_raise_the_count_above_the_truth() -> None:
    """Three workers reserve (limit 4); the server admits them 1, 3, 2 and answers in that
    order. After every answer exactly one request is left: never two (a self-caused 429)."""
    ft = FakeTime()
    limiter = RateLimiter(clock=ft.clock, jitter=lambda: 0.0)
    limiter.observe(headers(4, 4, T0 + 5))
    workers = InFlight(limiter, 4, {1: 3, 3: 2, 2: 1})  # the Remaining each answer tells
    seen = []
    for n in (1, 3, 2):
        workers.answer(n)
        seen.append(limiter.remaining)
    workers.join()
    assert seen == [1, 1, 1]


def test_spacing_is_the_window_over_its_limit_once_two_resets_tell_the_window() -> None:
    ft = FakeTime()
    limiter = RateLimiter(per_minute=120, clock=ft.clock, jitter=lambda: 0.0)
    assert limiter.spacing() == 0.5  # the documented 120/min until the headers tell more
    limiter.observe(headers(20, 19, T0 + 5))
    assert limiter.spacing() == 0.5  # one Reset says nothing of the window's length
    ft.now = T0 + 5  # rolled over
    assert limiter.delay() == 0.0
    limiter.observe(headers(20, 19, T0 + 10))
    assert limiter.spacing() == 0.25  # 20 requests per 5 s window
