"""Opaque, signed list cursors.

A cursor names a position ``(updated_at_us, id)`` rather than an offset, so it stays valid while
records change: an updated record moves past the cursor and is served again later in the same
traversal. The HMAC (keyed by a secret derived from the seed, bound to the resource) makes a
garbled or forged cursor detectable, which the API answers with 400 ``bad_request``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

_MAC_BYTES = 12


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a traversal stands: after this position, having served ``page`` pages."""

    us: int
    id: str
    page: int


class CursorCodec:
    """Encodes and verifies cursors with one server secret."""

    def __init__(self, seed: int) -> None:
        self._secret = hashlib.sha256(f"ciklek-sandbox-cursor:{seed}".encode()).digest()

    def _mac(self, resource: str, payload: bytes) -> bytes:
        msg = resource.encode() + b"|" + payload
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, resource: str, cursor: Cursor) -> str:
        payload = f"{cursor.page}:{cursor.us}:{cursor.id}".encode()
        raw = payload + b"|" + self._mac(resource, payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, resource: str, token: str) -> Cursor | None:
        """The cursor, or ``None`` when the token is garbled, forged or for another resource."""
        if not token or len(token) > 512:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) <= _MAC_BYTES + 1 or raw[-_MAC_BYTES - 1] != ord("|"):
            return None
        payload, mac = raw[: -_MAC_BYTES - 1], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(resource, payload)):
            return None
        try:
            page_s, us_s, rid = payload.decode().split(":", 2)
            page, us = int(page_s), int(us_s)
        except ValueError:
            return None
        if page < 1:
            return None
        return Cursor(us, rid, page)
