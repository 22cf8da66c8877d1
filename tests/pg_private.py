"""A throwaway PostgreSQL cluster of one test's own, which the test may stop and start.

The suite's shared cluster (scripts/postgres.sh, `CIKLEK_TEST_PG_DSN`) serves tests running in
parallel, so a test that stops its server needs a server nobody else uses. Made the way
scripts/postgres.sh makes the shared one: `initdb` into a fresh private directory (as the
`postgres` user when we are root: PostgreSQL refuses to run as root), password logins over TCP
on a free 127.0.0.1 port, no durability (fsync off).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateCluster:
    """`PrivateCluster.create()`, then `.dsn`, `.stop()`, `.start()`, `.destroy()`."""

    def __init__(self, bindir: Path, base: Path, port: int, password: str) -> None:
        self.bindir, self.base, self.port, self.password = bindir, base, port, password
        self.as_root = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://ciklek:{self.password}@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls) -> PrivateCluster:
        """A started cluster, or a clear failure in CI (a skip elsewhere) when it cannot be."""
        bindir = _bindir()
        if bindir is None:
            _unavailable("PostgreSQL server not installed (apt-get install postgresql)")
            raise AssertionError  # unreachable: _unavailable raises
        base = Path(tempfile.mkdtemp(prefix="ciklek-pgx-"))  # 0700, short socket path
        cluster = cls(bindir, base, _free_port(), secrets.token_hex(12))
        try:
            cluster._initdb()
            cluster.start()
        except (subprocess.CalledProcessError, OSError) as exc:
            cluster.destroy()
            _unavailable(f"a private PostgreSQL cluster could not start: {exc}")
        return cluster

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, cwd="/")

    def _initdb(self) -> None:
        if self.as_root:
            shutil.chown(self.base, "postgres")
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres")
        (self.base / "sock").mkdir()
        if self.as_root:
            shutil.chown(self.base / "sock", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.base / "data"),
            "-U", "ciklek",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base / 'sock'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"),
            "-l", str(self.base / "server.log"), "-w", "-t", "60", "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, clients disconnected."""
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "-w",
            "-t", "60", "stop",
        )  # fmt: skip

    def destroy(self) -> None:
        if (self.base / "data" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
