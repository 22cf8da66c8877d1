"""Command line and serving: ``python -m connector.sandbox [flags]``.

The sandbox binds its own socket (port 0 = any free port) before announcing itself, so the one
JSON line on stdout is a promise that the URL accepts connections: a parent process reads that
line and starts talking, with no polling and no port races. The line also carries the control
token that ``/_sandbox/*`` requires (see ``control.py``).

``--exit-with-parent`` (used by ``ciklek demo`` and the test harness) makes the sandbox stop when
the process that started it dies, however it dies: a ``kill -9`` of the parent must not leave a
server listening. The parent also asks the kernel for a SIGKILL on its death (Linux
``PR_SET_PDEATHSIG``); the watchdog here is the portable fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

import uvicorn

from .api import ROOT
from .app import CONTROL_ROOT, build_app
from .config import ALL_SCOPES, DEFAULT_KEY, FaultConfig, LimitConfig, SandboxConfig

HOST = "127.0.0.1"


def _key(text: str) -> tuple[str, tuple[str, ...]]:
    key, sep, scopes = text.partition("=")
    if not key or not sep:
        raise argparse.ArgumentTypeError("expected KEY=scope1,scope2")
    return key, tuple(s.strip() for s in scopes.split(",") if s.strip())


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a probability must be between 0 and 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ciklek sandbox",
        description=(
            "A local Ciklek API server with seeded data, real limits and faults. Prints one JSON "
            "line (url, control, keys, control_token), then serves on 127.0.0.1 until Ctrl-C. "
            "Also runs as `python -m connector.sandbox`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    p.add_argument(
        "--key",
        type=_key,
        action="append",
        default=[],
        metavar="KEY=SCOPES",
        help=f"API key and comma-separated scopes, repeatable (default: {DEFAULT_KEY}, all scopes)",
    )
    p.add_argument("--seed", type=int, default=42, help="the data is a pure function of it")
    p.add_argument("--orders", type=int, default=1000, help="orders (with line items) to seed")
    p.add_argument("--customers", type=int, default=200, help="customers to seed")
    p.add_argument("--products", type=int, default=100, help="products to seed")
    p.add_argument(
        "--window-seconds", type=float, default=60.0, help="length of the rate-limit window"
    )
    p.add_argument("--window-limit", type=int, default=120, help="requests per window per key")
    p.add_argument("--daily-quota", type=int, default=50_000, help="requests per UTC day per key")
    p.add_argument("--error-rate", type=_rate, default=0.0, help="P(500) per /v1 request")
    p.add_argument("--drop-rate", type=_rate, default=0.0, help="P(connection dropped mid-body)")
    p.add_argument("--rate429", type=_rate, default=0.0, help="P(spurious 429 rate_limited)")
    p.add_argument("--truncate-rate", type=_rate, default=0.0, help="P(200 with cut JSON)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    p.add_argument("--bad-records", type=_rate, default=0.0, help="fraction of invalid records")
    p.add_argument(
        "--extreme-values",
        action="store_true",
        help="seed amounts beyond 2**53 cents and negative (credit) totals, to test exact money",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the parent process dies (for programs that start the sandbox)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    keys = dict(args.key) if args.key else {DEFAULT_KEY: ALL_SCOPES}
    return SandboxConfig(
        keys=keys,
        seed=args.seed,
        orders=args.orders,
        customers=args.customers,
        products=args.products,
        bad_records=args.bad_records,
        extreme_values=args.extreme_values,
        limits=LimitConfig(args.window_seconds, args.window_limit, args.daily_quota),
        faults=FaultConfig(
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            rate429=args.rate429,
            truncate_rate=args.truncate_rate,
            latency_ms=args.latency_ms,
        ),
    )


class _QuietDrops(logging.Filter):
    """Hide uvicorn's complaint about the responses the drop fault leaves unfinished on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def watch_parent(parent: int, interval: float = 0.25) -> threading.Thread:
    """SIGTERM ourselves (a graceful stop) once `parent` is no longer our parent process."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the first stdout line is the JSON announcement."""
    args = parser().parse_args(list(argv) if argv is not None else None)
    if args.exit_with_parent:
        watch_parent(os.getppid())
    # Poison-record tests store a field nested 1,000 deep, which the stdlib JSON codec counts
    # against the recursion limit (1,000 by default): the sandbox must carry what a server sends.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5_000))
    config = config_from_args(args)
    app = build_app(config)
    sock = _bind(args.port)
    port = sock.getsockname()[1]
    base = f"http://{HOST}:{port}"
    announcement = {
        "url": base + ROOT,
        "control": base + CONTROL_ROOT,
        "keys": {key: list(scopes) for key, scopes in config.keys.items()},
        "control_token": app.state.control_token,
    }
    sys.stdout.write(json.dumps(announcement) + "\n")
    sys.stdout.flush()
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",  # no websockets: uvicorn then imports no websocket protocol at start
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            http="httptools" if importlib.util.find_spec("httptools") else "h11",
            timeout_graceful_shutdown=2,
        )
    )
    # uvicorn re-raises a captured SIGINT after its graceful shutdown; that is our exit.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return 0
