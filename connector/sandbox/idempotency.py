"""Stored responses for ``Idempotency-Key`` replays.

The contract promises that a retried POST with the same key returns the original response and
creates nothing; a retry is exactly what a connector sends after a dropped 201. Keys are scoped
to the API key that used them and expire after 24 hours of sandbox clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from .timefmt import US_PER_DAY, SandboxClock

TTL_US = US_PER_DAY


@dataclass(slots=True)
class StoredResponse:
    """The first response given for a key, and the canonical body that produced it."""

    fingerprint: str
    status: int
    body: bytes
    created_us: int


class IdempotencyStore:
    """``(api key, idempotency key)`` to the response first given for it."""

    def __init__(self, clock: SandboxClock) -> None:
        self.clock = clock
        self._stored: dict[tuple[str, str], StoredResponse] = {}

    def get(self, api_key: str, idem_key: str) -> StoredResponse | None:
        stored = self._stored.get((api_key, idem_key))
        if stored is not None and self.clock.now_us() - stored.created_us >= TTL_US:
            del self._stored[(api_key, idem_key)]
            return None
        return stored

    def put(self, api_key: str, idem_key: str, fingerprint: str, status: int, body: bytes) -> None:
        self._stored[(api_key, idem_key)] = StoredResponse(
            fingerprint, status, body, self.clock.now_us()
        )
