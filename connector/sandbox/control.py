"""``/_sandbox``: the test harness's handle on a running sandbox.

Tests and demos need to look behind the API (what did the connector send?), bend time (expire a
window or a day without waiting) and change the world mid-sync (update, create, corrupt or
delete records). None of this is rate limited or counted: it is not the API.

It is guarded all the same (``ControlGuard``), because a browser on the developer's machine can
reach 127.0.0.1: a page could POST a form (CSRF) or rebind its own host name to 127.0.0.1 (DNS
rebinding) and change the world behind a running sync. So every control call needs a loopback
``Host`` (and ``Origin``, when sent), the per-start token from the start-up line in the
``X-Sandbox-Token`` header (a custom header a page cannot send without a CORS preflight, which
we never grant), and POST/PATCH bodies declared as JSON (forms and ``text/plain`` are refused).
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .cursor import CursorCodec
from .state import RESOURCES, FieldChange, SandboxState
from .store import dump

TOKEN_HEADER = "X-Sandbox-Token"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})


def _hostname(authority: str) -> str:
    """``127.0.0.1:8000`` / ``[::1]:8000`` / ``localhost`` -> the bare, lower-case host name."""
    try:
        return (urlsplit(f"//{authority}").hostname or "").lower()
    except ValueError:
        return ""


class ControlGuard:
    """ASGI wrapper refusing control calls that a browser page (not a test) could have sent."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await _problem(*refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if _hostname(headers.get("host", "")) not in _LOOPBACK:
            return 403, "the control API answers only a loopback Host (127.0.0.1 or localhost)"
        origin = headers.get("origin")
        if origin is not None and _hostname(origin.partition("://")[2]) not in _LOOPBACK:
            return 403, "the control API refuses requests from a non-loopback Origin"
        given = headers.get(TOKEN_HEADER.lower(), "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return 403, f"missing or wrong {TOKEN_HEADER} (it is printed in the start-up line)"
        if scope["method"] in _BODY_METHODS:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return 415, "control POST/PATCH bodies must be sent as application/json"
        return None


def _json(data: Any, status: int = 200) -> Response:
    return Response(dump(data), status_code=status, media_type="application/json")


def _problem(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


async def _json_object(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _float_param(request: Request, name: str, default: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        return None


def control_routes(state: SandboxState) -> list[Route]:
    """The control endpoints bound to one sandbox's state."""

    async def stats(request: Request) -> Response:
        return _json(state.snapshot())

    async def reset_stats(request: Request) -> Response:
        state.stats.reset()
        return _json({"ok": True})

    async def new_day(request: Request) -> Response:
        state.limiter.new_day()
        return _json({"ok": True})

    rotations = [0]

    async def rotate_cursor_secret(request: Request) -> Response:
        # A real server may invalidate outstanding cursors (deploy, key rotation): every cursor
        # issued so far is answered 400 from now on.
        rotations[0] += 1
        state.codec = CursorCodec(state.config.seed * 1_000_003 + rotations[0])
        return _json({"ok": True, "rotations": rotations[0]})

    async def clock(request: Request) -> Response:
        advance = _float_param(request, "advance", 0.0)
        if advance is None:
            return _problem(400, "advance must be a number of seconds")
        state.clock.advance(advance)
        return _json({"now": state.clock.now(), "offset_seconds": state.clock.offset_us / 1e6})

    async def mutate(request: Request) -> Response:
        resource = request.query_params.get("resource", "orders")
        if resource not in RESOURCES:
            return _problem(404, f"unknown resource {resource}")
        try:
            update = int(request.query_params.get("update", "0"))
            create = int(request.query_params.get("create", "0"))
        except ValueError:
            return _problem(400, "update and create must be integers")
        late = _float_param(request, "late_seconds", 0.0)
        if late is None or not 0 <= late < 10 * 365 * 86_400:
            return _problem(400, "late_seconds must be a number of seconds, 0 or more")
        return _json(state.mutate(resource, update, create, late))

    async def record(request: Request) -> Response:
        resource: str = request.path_params["resource"]
        rid: str = request.path_params["rid"]
        if resource not in RESOURCES:
            return _problem(404, f"unknown resource {resource}")
        store = state.stores[resource]
        if request.method == "GET":
            entry = store.get(rid)
            if entry is None:
                return _problem(404, "record not found")
            return Response(entry.body, media_type="application/json")
        if request.method == "DELETE":
            if not state.delete(resource, rid):
                return _problem(404, "record not found")
            return _json({"deleted": rid})
        changes = await _json_object(request)
        if changes is None:
            return _problem(400, "body must be a JSON object")
        entry = state.patch(resource, rid, changes)
        if entry is None:
            return _problem(404, "record not found")
        return Response(entry.body, media_type="application/json")

    async def recreate(request: Request) -> Response:
        resource: str = request.path_params["resource"]
        if resource not in RESOURCES:
            return _problem(404, f"unknown resource {resource}")
        entry = state.recreate(resource, request.path_params["rid"])
        if entry is None:
            return _problem(404, "no deleted record with this id")
        return Response(entry.body, media_type="application/json")

    async def hide(request: Request) -> Response:
        body = await _json_object(request)
        if body is None or body.get("resource") not in RESOURCES:
            return _problem(400, f'body must be {{"resource": one of {list(RESOURCES)}, ...}}')
        try:
            share = float(body.get("share", 0.0))
        except (TypeError, ValueError):
            return _problem(400, "share must be a number from 0 to 1")
        if not 0.0 <= share <= 1.0:
            return _problem(400, "share must be a number from 0 to 1")
        state.hidden[body["resource"]] = share
        return _json(state.hidden)

    async def fields(request: Request) -> Response:
        # The API changes what it sends from now on: {"resource": "orders", "add": {"name":
        # value, ...}, "drop": ["field", ...]}; only {"resource": ...} sends records as stored.
        body = await _json_object(request)
        if body is None or body.get("resource") not in RESOURCES:
            return _problem(400, f'body must be {{"resource": one of {list(RESOURCES)}, ...}}')
        add, drop = body.get("add", {}), body.get("drop", [])
        if not isinstance(add, dict) or not isinstance(drop, list):
            return _problem(400, "add must be an object of field: value, drop a list of names")
        if add or drop:
            state.fields[body["resource"]] = FieldChange(dict(add), frozenset(map(str, drop)))
        else:
            state.fields.pop(body["resource"], None)
        return _json({r: {"add": c.add, "drop": sorted(c.drop)} for r, c in state.fields.items()})

    async def set_faults(request: Request) -> Response:
        changes = await _json_object(request)
        if changes is None:
            return _problem(400, "body must be a JSON object")
        try:
            unknown = state.faults.update(changes)
        except (TypeError, ValueError):
            return _problem(400, "fault values must be numbers")
        if unknown:
            return _problem(400, f"unknown fault settings: {', '.join(sorted(unknown))}")
        return _json(vars(state.faults.config))

    async def set_limits(request: Request) -> Response:
        changes = await _json_object(request)
        if changes is None:
            return _problem(400, "body must be a JSON object")
        limits = state.limiter.limits
        unknown = sorted(set(changes) - {"window_seconds", "window_limit", "daily_quota"})
        if unknown:
            return _problem(400, f"unknown limit settings: {', '.join(unknown)}")
        try:
            values = {
                name: float(value) if name == "window_seconds" else int(value)
                for name, value in changes.items()
            }
        except (TypeError, ValueError):
            return _problem(400, "limit values must be numbers")
        for name, value in values.items():
            setattr(limits, name, value)
        return _json(vars(limits))

    return [
        Route("/stats", stats, methods=["GET"]),
        Route("/reset_stats", reset_stats, methods=["POST"]),
        Route("/new_day", new_day, methods=["POST"]),
        Route("/clock", clock, methods=["POST"]),
        Route("/rotate_cursor_secret", rotate_cursor_secret, methods=["POST"]),
        Route("/mutate", mutate, methods=["POST"]),
        Route("/records/{resource}/{rid}", record, methods=["GET", "PATCH", "DELETE"]),
        Route("/records/{resource}/{rid}/recreate", recreate, methods=["POST"]),
        Route("/hide", hide, methods=["POST"]),
        Route("/fields", fields, methods=["POST"]),
        Route("/faults", set_faults, methods=["POST"]),
        Route("/limits", set_limits, methods=["POST"]),
    ]
