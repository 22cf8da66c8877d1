"""Run the sandbox as a real subprocess for integration tests and benchmarks.

A subprocess, not an in-process app, because the connector must be tested over a real socket:
dropped connections, keep-alive and timeouts only exist there. The sandbox announces itself on
its first stdout line, so start-up needs no polling and no fixed port. That line carries the
control token too: every control call below sends it (``X-Sandbox-Token``) with a JSON content
type, so tests never talk to ``/_sandbox`` by hand. The sandbox is started with
``--exit-with-parent``, so a killed test run leaves no server behind.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from connector.api.tls import tls_context
from connector.sandbox.config import key_fingerprint

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
TOKEN_HEADER = "X-Sandbox-Token"


class SandboxProcess:
    """``with SandboxProcess("--orders", "500") as sb:`` then ``sb.url``, ``sb.key``..."""

    def __init__(self, *flags: str) -> None:
        self.flags = [str(flag) for flag in flags]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.control = ""
        self.control_token = ""
        self.keys: dict[str, list[str]] = {}
        self._control: httpx.Client | None = None  # one keep-alive client for control calls

    @property
    def key(self) -> str:
        """The first announced key (the full-scope default unless ``--key`` was given)."""
        return next(iter(self.keys))

    @staticmethod
    def fingerprint(key: str) -> str:
        """How ``/stats`` names a key (``counted_today``): never the raw key."""
        return key_fingerprint(key)

    def start(self) -> SandboxProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        cmd = [
            sys.executable,
            "-m",
            "connector.sandbox",
            "--port",
            "0",
            "--exit-with-parent",
            # The tests' data carries the extreme amounts (2**53+ cents, credit totals) that
            # exact money must survive; `ciklek demo` and a plain `ciklek sandbox` do not.
            "--extreme-values",
            *self.flags,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=str(REPO_ROOT)
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            # Read the announcement, then keep draining so the child never blocks on a pipe.
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"sandbox did not announce itself within {START_TIMEOUT}s") from None
        if not first:
            code = self.proc.wait()
            raise RuntimeError(f"sandbox exited with {code} before announcing itself")
        info = json.loads(first)
        self.url, self.control, self.keys = info["url"], info["control"], info["keys"]
        self.control_token = info["control_token"]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on the API base URL, authenticated with ``key`` (default: first)."""
        headers = {"Authorization": f"Bearer {key or self.key}"}
        kwargs.setdefault("verify", tls_context(True))  # not a CA bundle loaded per client
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def control_headers(self, method: str = "GET") -> dict[str, str]:
        """What the control API requires: the token, and a JSON content type on POST/PATCH."""
        headers = {TOKEN_HEADER: self.control_token}
        if method.upper() in {"POST", "PATCH", "PUT"}:
            headers["Content-Type"] = "application/json"
        return headers

    def stats(self) -> dict[str, Any]:
        response = self.control_request("GET", "stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def control_post(self, path: str, **params_or_json: Any) -> Any:
        """POST to a control endpoint; ``json=`` sends a body, other kwargs are query params."""
        body = params_or_json.pop("json", None)
        kwargs: dict[str, Any] = {"params": params_or_json}
        if body is not None:
            kwargs["json"] = body
        response = self.control_request("POST", path, **kwargs)
        response.raise_for_status()
        return response.json()

    def control_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any other control call (``GET``/``PATCH``/``DELETE`` on ``records/...``)."""
        headers = {**self.control_headers(method), **kwargs.pop("headers", {})}
        if self._control is None:  # one client, not one per call (each loads a CA bundle)
            self._control = httpx.Client(timeout=10, verify=tls_context(True))
        return self._control.request(
            method, f"{self.control}/{path.lstrip('/')}", headers=headers, **kwargs
        )
