"""Seeded fault injection for ``/v1`` requests.

A connector is only as good as its behaviour on a bad day, so the sandbox can answer with 500s,
drop connections mid-body, send spurious 429s, truncate JSON and add latency. Draws come from a
``random.Random(seed)`` in a fixed order, so a failing run replays the same faults.
"""

from __future__ import annotations

import random
from typing import Any

from .config import FaultConfig

ERROR = "error"
DROP = "drop"
RATE429 = "rate429"
TRUNCATE = "truncate"

_KINDS: tuple[tuple[str, str], ...] = (
    (ERROR, "error_rate"),
    (DROP, "drop_rate"),
    (RATE429, "rate429"),
    (TRUNCATE, "truncate_rate"),
)


class FaultInjector:
    """Decides, per request, whether and how to misbehave."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self._rng = random.Random(seed ^ 0xFA17)
        self.injected: dict[str, int] = {kind: 0 for kind, _ in _KINDS}
        self.injected["post_fail_after_write"] = 0

    def pick(self) -> str | None:
        """The fault for this request, or ``None``; each configured kind gets its own draw."""
        for kind, attr in _KINDS:
            rate: float = getattr(self.config, attr)
            if rate > 0 and self._rng.random() < rate:
                self.injected[kind] += 1
                return kind
        return None

    @property
    def latency_seconds(self) -> float:
        return max(0.0, self.config.latency_ms) / 1000

    def take_post_failure(self) -> bool:
        """Whether this write should be stored and then answered with a 500."""
        if self.config.post_fail_after_write > 0:
            self.config.post_fail_after_write -= 1
            self.injected["post_fail_after_write"] += 1
            return True
        return False

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply a runtime change; returns the names that are not fault settings."""
        unknown: list[str] = []
        for name, value in changes.items():
            if name == "post_fail_after_write":
                self.config.post_fail_after_write = int(value)
            elif name in ("error_rate", "drop_rate", "rate429", "truncate_rate", "latency_ms"):
                setattr(self.config, name, float(value))
            else:
                unknown.append(name)
        return unknown
