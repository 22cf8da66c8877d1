"""The body decoder never holds more than the cap, whatever the compression ratio."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from connector.api.bounded_body import BodyTooLarge, BoundedDecoder

CAP = 1_000_000


def test_a_gzip_bomb_stops_at_the_cap_after_inflating_at_most_cap_plus_one() -> None:
    bomb = gzip.compress(b"\0" * 200_000_000, 9)  # 200 MB inflated, ~200 KB on the wire
    decoder = BoundedDecoder("gzip", CAP)
    with pytest.raises(BodyTooLarge):
        for start in range(0, len(bomb), 65536):  # whole network reads at once
            decoder.feed(bomb[start : start + 65536])
    assert decoder.size == CAP + 1  # zlib's max_length: never a byte more than needed


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", lambda b: gzip.compress(b)),
        ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
        ("identity", lambda b: b),
    ],
)
def test_bodies_within_the_cap_decode_exactly(encoding: str, compress) -> None:  # type: ignore[no-untyped-def]
    body = b'{"data": [' + b'{"id": "a"},' * 5000 + b'{"id": "b"}]}'
    wire = compress(body)
    decoder = BoundedDecoder(encoding, CAP)
    out = b"".join(decoder.feed(wire[i : i + 7]) for i in range(0, len(wire), 7))
    assert out == body


def test_a_garbled_gzip_body_is_a_decoding_error() -> None:
    with pytest.raises(httpx.DecodingError):
        BoundedDecoder("gzip", CAP).feed(b"this is not gzip at all")
