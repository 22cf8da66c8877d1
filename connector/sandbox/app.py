"""``build_app``: the whole sandbox as one Starlette app, for uvicorn or in-process tests."""

from __future__ import annotations

import secrets

from starlette.applications import Starlette
from starlette.routing import Mount, Router

from .api import ROOT, V1App
from .config import SandboxConfig
from .control import ControlGuard, control_routes
from .state import SandboxState

CONTROL_ROOT = "/_sandbox"


def build_app(config: SandboxConfig | None = None) -> Starlette:
    """Generate the dataset and wire ``/v1`` and ``/_sandbox``; state is ``app.state.sandbox``.

    The control API answers only requests carrying ``app.state.control_token`` (see
    ``ControlGuard``): a web page the developer happens to open must not be able to drive it.
    """
    config = config or SandboxConfig()
    token = config.control_token or secrets.token_urlsafe(24)
    state = SandboxState(config)
    control = ControlGuard(Router(routes=control_routes(state)), token)
    app = Starlette(routes=[Mount(ROOT, app=V1App(state)), Mount(CONTROL_ROOT, app=control)])
    app.state.sandbox = state
    app.state.control_token = token
    return app
