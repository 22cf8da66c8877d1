"""Everything a sandbox run can be told, as one immutable-ish dataclass.

The CLI flags, ``build_app`` for in-process use and the tests all build a ``SandboxConfig``,
so a default changes in exactly one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

ALL_SCOPES: tuple[str, ...] = ("orders:read", "orders:write", "customers:read", "products:read")
DEFAULT_KEY = "bsk_test_sandbox"


def key_fingerprint(key: str) -> str:
    """How ``/_sandbox/stats`` names a key: never the key itself (the connector's own format)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _default_keys() -> dict[str, tuple[str, ...]]:
    return {DEFAULT_KEY: ALL_SCOPES}


@dataclass
class FaultConfig:
    """Per-request fault probabilities (0..1) and added latency; changeable at runtime."""

    error_rate: float = 0.0
    drop_rate: float = 0.0
    rate429: float = 0.0
    truncate_rate: float = 0.0
    latency_ms: float = 0.0
    post_fail_after_write: int = 0


@dataclass
class LimitConfig:
    """The published limits (120/min, 50,000/day) unless a test wants them tighter."""

    window_seconds: float = 60.0
    window_limit: int = 120
    daily_quota: int = 50_000


@dataclass
class SandboxConfig:
    """How to build one sandbox: keys, dataset size, limits and faults.

    ``control_token`` guards ``/_sandbox/*``; None draws a random one per app (read it back from
    ``app.state.control_token``).
    """

    keys: dict[str, tuple[str, ...]] = field(default_factory=_default_keys)
    seed: int = 42
    orders: int = 1000
    customers: int = 200
    products: int = 100
    bad_records: float = 0.0
    # Amounts beyond 2**53 cents and negative (credit) totals: what DECIMAL must carry exactly.
    # Off by default so demo revenue looks like a shop's; the tests turn it on.
    extreme_values: bool = False
    limits: LimitConfig = field(default_factory=LimitConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    control_token: str | None = None
