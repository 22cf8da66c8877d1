"""``build_app``: the whole sandbox as one Starlette app, for uvicorn or in-process tests."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from .api import ROOT, V1App
from .config import SandboxConfig
from .control import control_routes
from .state import SandboxState

CONTROL_ROOT = "/_sandbox"


def build_app(config: SandboxConfig | None = None) -> Starlette:
    """Generate the dataset and wire ``/v1`` and ``/_sandbox``; state is ``app.state.sandbox``."""
    state = SandboxState(config or SandboxConfig())
    app = Starlette(
        routes=[
            Mount(ROOT, app=V1App(state)),
            Mount(CONTROL_ROOT, routes=control_routes(state)),
        ]
    )
    app.state.sandbox = state
    return app
