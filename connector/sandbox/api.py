"""The ``/v1`` API as a raw ASGI app: the hot path, and full control over the wire.

Raw ASGI rather than Starlette routes for two reasons: list pages are served at hundreds per
second by joining cached bytes, and fault injection needs to misbehave below the framework (a
Content-Length larger than the body, then a closed connection). Checks run in the contract's
order: auth, daily quota, window limit, counting, faults, scope, parameters, handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from . import faults, orders
from .cursor import Cursor
from .ratelimit import RATE_LIMITED, RateState
from .state import SandboxState
from .store import dump
from .timefmt import parse_ts

log = logging.getLogger("connector.sandbox")

ROOT = "/v1"
LIST_SCOPES = {
    f"{ROOT}/orders": ("orders", "orders:read"),
    f"{ROOT}/customers": ("customers", "customers:read"),
    f"{ROOT}/products": ("products", "products:read"),
}
ORDER_PREFIX = f"{ROOT}/orders/"
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_BODY = 1 << 20
_DIGITS = re.compile(r"[0-9]{1,6}")
_JSON = (b"content-type", b"application/json")

Headers = list[tuple[bytes, bytes]]


class Reply:
    """A status, a JSON body and any extra headers, before rate headers are added."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


def error(status: int, code: str, message: str, details: Any = None) -> Reply:
    """The contract's error envelope; ``details`` only when there are some."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return Reply(status, dump({"error": err}))


def _path_label(path: str) -> str:
    if path.startswith(ORDER_PREFIX) and "/" not in path[len(ORDER_PREFIX) :]:
        return f"{ROOT}/orders/{{id}}"
    return path


class V1App:
    """ASGI app for everything under ``/v1`` (mount it at ``/v1``; it reads the full path)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        state = self.state
        state.stats.requests += 1
        path: str = scope["path"]
        label = _path_label(path)
        key = self._api_key(scope["headers"])
        if key is None:
            reply = error(401, "unauthorized", "Missing or invalid API key")
            await self._send(send, reply, state.limiter.anonymous(), label)
            return
        rate = state.limiter.check(key)
        if rate.refused is not None:
            message = (
                "Rate limit exceeded; retry after X-RateLimit-Reset"
                if rate.refused == RATE_LIMITED
                else "Daily request quota exhausted; resets at 00:00 UTC"
            )
            await self._send(send, error(429, rate.refused, message), rate, label)
            return
        fault = state.faults.pick()
        if state.faults.latency_seconds:
            await asyncio.sleep(state.faults.latency_seconds)
        if fault == faults.ERROR:
            reply = error(500, "internal_error", "Internal server error (injected)")
            await self._send(send, reply, rate, label)
            return
        if fault == faults.RATE429:
            reply = error(429, RATE_LIMITED, "Rate limit exceeded; retry after X-RateLimit-Reset")
            await self._send(send, reply, RateState(rate.limit, 0, rate.reset), label)
            return
        try:
            reply = await self._handle(scope, receive, key, path)
        except Exception:
            log.exception("sandbox handler failed for %s", path)
            reply = error(500, "internal_error", "Internal server error")
        if fault == faults.DROP:
            await self._drop(send, reply, rate, label)
            return
        if fault == faults.TRUNCATE and reply.status < 400:
            reply.body = reply.body[: len(reply.body) // 2]
        await self._send(send, reply, rate, label)

    def _api_key(self, headers: Headers) -> str | None:
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip()
                if scheme.lower() == "bearer" and token in self.state.keys:
                    return token
                return None
        return None

    async def _send(self, send: Send, reply: Reply, rate: RateState, label: str) -> None:
        self.state.stats.record(label, str(reply.status))
        headers = [_JSON, (b"content-length", str(len(reply.body)).encode())]
        headers += rate.headers()
        headers += reply.headers
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _drop(self, send: Send, reply: Reply, rate: RateState, label: str) -> None:
        """Promise the whole body, send half, then return: the server closes the socket."""
        self.state.stats.record(label, "dropped")
        headers = [_JSON, (b"content-length", str(len(reply.body) + 1).encode())]
        headers += rate.headers()
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        part = reply.body[: len(reply.body) // 2]
        await send({"type": "http.response.body", "body": part, "more_body": True})

    async def _handle(self, scope: Scope, receive: Receive, key: str, path: str) -> Reply:
        method: str = scope["method"]
        scopes = self.state.keys[key]
        listed = LIST_SCOPES.get(path)
        if listed is not None:
            resource, needed = listed
            if method == "POST" and resource == "orders":
                if "orders:write" not in scopes:
                    return _forbidden("orders:write")
                return await self._create_order(scope, receive, key)
            if method != "GET":
                return error(405, "method_not_allowed", f"{method} is not allowed on {path}")
            if needed not in scopes:
                return _forbidden(needed)
            return self._list(resource, scope["query_string"])
        if path.startswith(ORDER_PREFIX) and "/" not in path[len(ORDER_PREFIX) :]:
            if method != "GET":
                return error(405, "method_not_allowed", f"{method} is not allowed on {path}")
            if "orders:read" not in scopes:
                return _forbidden("orders:read")
            entry = self.state.stores["orders"].get(path[len(ORDER_PREFIX) :])
            if entry is None:
                return error(404, "not_found", "Order not found")
            return Reply(200, b'{"data":' + self.state.served("orders", entry) + b"}")
        return error(404, "not_found", "Route not found")

    def _list(self, resource: str, query_string: bytes) -> Reply:
        params = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        limit = DEFAULT_LIMIT
        if "limit" in params:
            raw = params["limit"]
            if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
                return error(400, "bad_request", "limit must be an integer from 1 to 100")
            limit = int(raw)
        since: int | None = None
        if "updated_since" in params:
            since = parse_ts(params["updated_since"])
            if since is None:
                return error(400, "bad_request", "updated_since must be an ISO 8601 timestamp")
        cursor: Cursor | None = None
        if "after" in params:
            cursor = self.state.codec.decode(resource, params["after"])
            if cursor is None:
                return error(400, "bad_request", "after is not a valid cursor")
        page = self.state.stores[resource].page(
            since, None if cursor is None else (cursor.us, cursor.id), limit
        )
        page_no = 1 if cursor is None else cursor.page + 1
        next_cursor: str | None = None
        if page.has_more and page.entries:
            last = page.entries[-1]
            next_cursor = self.state.codec.encode(resource, Cursor(last.us, last.id, page_no))
        meta = dump(
            {"total": page.total, "page": page_no, "per_page": limit, "next_cursor": next_cursor}
        )
        entries = page.entries
        if resource in self.state.hidden:  # silently left out; meta.total still counts them
            entries = [e for e in entries if not self.state.is_hidden(resource, e.id)]
        if resource in self.state.fields:  # the API changed what it sends (a schema change)
            body = b",".join([self.state.served(resource, entry) for entry in entries])
        else:
            body = b",".join([entry.body for entry in entries])
        return Reply(200, b'{"data":[' + body + b'],"meta":' + meta + b"}")

    async def _create_order(self, scope: Scope, receive: Receive, key: str) -> Reply:
        raw = await _read_body(receive)
        if raw is None:
            return error(400, "bad_request", "request body is too large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return error(400, "bad_request", "request body must be valid JSON")
        if not isinstance(body, dict):
            return error(400, "bad_request", "request body must be a JSON object")
        state = self.state
        idem_key = _header(scope["headers"], b"idempotency-key")
        fingerprint = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        if idem_key is not None:
            stored = state.idempotency.get(key, idem_key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    detail = {
                        "field": "Idempotency-Key",
                        "message": "key was already used with a different request body",
                    }
                    return error(422, "idempotency_conflict", "Idempotency key reused", [detail])
                return Reply(stored.status, stored.body, [(b"idempotent-replayed", b"true")])
        store, customers, products = (state.stores[n] for n in ("orders", "customers", "products"))
        details = orders.validate(body, customers, products)
        if details:
            return error(422, "validation_failed", "Order validation failed", details)
        us = store.next_us(state.clock.now_us())
        order = orders.build(body, state.factory, products, us)
        store.put(order["id"], us, order)
        reply_body = dump({"data": order})
        if idem_key is not None:
            state.idempotency.put(key, idem_key, fingerprint, 201, reply_body)
        if state.faults.take_post_failure():
            return error(500, "internal_error", "Internal server error (after write, injected)")
        return Reply(201, reply_body)


def _forbidden(needed: str) -> Reply:
    return error(403, "forbidden", f"API key lacks the required scope {needed}")


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` past ``MAX_BODY`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
