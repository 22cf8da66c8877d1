"""The local Ciklek sandbox: an independent HTTP server implementing the API contract.

It imports nothing from the connector, so the connector is tested against the contract rather
than against itself. ``main(argv)`` runs it (``ciklek sandbox``); ``build_app(config)`` gives the
Starlette app for in-process use.
"""

from __future__ import annotations

from .app import build_app
from .config import FaultConfig, LimitConfig, SandboxConfig
from .server import main

__all__ = ["FaultConfig", "LimitConfig", "SandboxConfig", "build_app", "main"]
