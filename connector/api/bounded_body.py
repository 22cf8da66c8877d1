"""Inflate a response body without ever holding more than the cap of decoded bytes.

Why not httpx's own decoding (`iter_bytes`): it inflates each network read whole, and a read of
a gzip bomb can be 64 KiB that inflates to 64 MiB, or more when the socket had more waiting (a
busy machine measured 386 MB for a 408 KB bomb). zlib's `max_length` lets us stop at the cap
plus one byte, whatever the compression ratio, so memory is bounded by the cap itself.
"""

from __future__ import annotations

import zlib

import httpx

GZIP_WBITS = 16 + zlib.MAX_WBITS


class BodyTooLarge(Exception):
    """The decoded body passed the cap (a broken contract or a compression bomb)."""


class BoundedDecoder:
    """Decoded bytes of a body in `identity`, `gzip` or `deflate` encoding, up to `cap`."""

    def __init__(self, encoding: str, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self._encoding = encoding
        self._zlib: zlib._Decompress | None = None
        self._first = True
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(GZIP_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()

    def feed(self, raw: bytes) -> bytes:
        """The decoded bytes for `raw`; BodyTooLarge past the cap, httpx.DecodingError when the
        bytes do not inflate (a garbled page, which the client retries)."""
        if self._zlib is None:
            return self._count(raw)
        out = bytearray()
        data = raw
        while data:
            try:
                piece = self._zlib.decompress(data, self.cap - self.size + 1)
            except zlib.error as exc:
                if self._encoding == "deflate" and self._first:
                    # Servers send "deflate" both zlib-wrapped (the RFC) and raw; httpx accepts
                    # both, so do we: retry the first bytes as raw deflate.
                    self._zlib, self._first = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise httpx.DecodingError(f"{self._encoding} body does not inflate: {exc}") from exc
            self._first = False
            out += self._count(piece)
            data = self._zlib.unconsumed_tail
            if not piece and not data:
                break
        return bytes(out)

    def feed_decoded(self, piece: bytes) -> bytes:
        """Bytes httpx already decoded (an in-memory response): only the cap applies."""
        return self._count(piece)

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.cap:
            raise BodyTooLarge
        return piece
