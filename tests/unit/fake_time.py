"""A fake clock shared by the client and limiter unit tests: tests never really wait."""

from __future__ import annotations

T0 = 1_800_000_000.0  # an instant on a whole second, so Reset headers are exact offsets


class FakeTime:
    """A clock that only moves when someone sleeps; every sleep is recorded."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
