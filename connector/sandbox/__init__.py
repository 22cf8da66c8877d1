"""The local Ciklek sandbox: an independent HTTP server implementing the API contract.

It imports nothing from the connector, so the connector is tested against the contract rather
than against itself. ``main(argv)`` runs it (``ciklek sandbox``); ``build_app(config)`` gives the
Starlette app for in-process use.

The web server (starlette, uvicorn) is the optional ``[sandbox]`` extra, so a production install
carries none: the exports are lazy, and ``missing_extra()`` lets a caller say so in one line
instead of failing with an ImportError halfway through.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

INSTALL_HINT = "pip install 'ciklek-connector[sandbox]'"
SERVER_PACKAGES = ("starlette", "uvicorn")

_EXPORTS = {
    "build_app": ".app",
    "FaultConfig": ".config",
    "LimitConfig": ".config",
    "SandboxConfig": ".config",
    "main": ".server",
}

__all__ = ["INSTALL_HINT", "FaultConfig", "LimitConfig", "SandboxConfig", "build_app", "main"]

if TYPE_CHECKING:
    from .app import build_app
    from .config import FaultConfig, LimitConfig, SandboxConfig
    from .server import main


def missing_extra() -> str | None:
    """One line naming the install command when the web server packages are absent, else None."""
    missing = [name for name in SERVER_PACKAGES if _find(name) is None]
    if not missing:
        return None
    return (
        f"the sandbox needs {' and '.join(missing)}, which a production install leaves out: "
        f"run {INSTALL_HINT}"
    )


def _find(name: str) -> object:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return None


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'connector.sandbox' has no attribute {name!r}")
    value: object = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
