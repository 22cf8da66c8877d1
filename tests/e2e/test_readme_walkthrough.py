"""README's "Try it without an account" is executed as written, command by command.

The fenced `sh` blocks of that section are run in one bash session (their variables carry from
one command to the next, as in a reader's terminal), with the virtualenv's `ciklek` on PATH, in
a fresh directory and state dir. Only the sandbox's port is replaced by a free one, so parallel
test runs do not collide. Each command must exit 0; a marker after each one names the command
that failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.helpers import DEFAULT_DB

README = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"
SECTION = "## Try it without an account"
README_PORT = "8765"


def walkthrough_commands(text: str) -> list[str]:
    """The commands of the section's ```sh blocks, in order (comments and blank lines out)."""
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    section = text[start:end]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                commands.append(stripped)
    return commands


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def test_the_walkthrough_runs_command_by_command(clean_env: Path) -> None:
    commands = walkthrough_commands(README.read_text())
    assert any(c.startswith("ciklek sandbox") for c in commands)
    assert any("X-Sandbox-Token" in c for c in commands)
    port = _free_port()
    script = ["set -uo pipefail"]
    for n, command in enumerate(commands):
        command = command.replace(README_PORT, port)
        # Each command is checked on its own: the marker tells which one failed.
        script.append(f'{command}\nrc=$?; echo "::step {n} rc=$rc" >&2; [ $rc = 0 ] || exit $rc')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=clean_env,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the sandbox it starts is in this group: stopped below
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    steps = re.findall(r"::step (\d+) rc=(\d+)", stderr)
    failed = [(int(n), rc) for n, rc in steps if rc != "0"]
    assert not failed and len(steps) == len(commands), (
        f"failed at {commands[failed[0][0]] if failed else 'an unmarked step'}\n{stdout}\n{stderr}"
    )
    banner = json.loads((clean_env / "sandbox.json").read_text().splitlines()[0])
    assert banner["url"] == f"http://127.0.0.1:{port}/v1" and banner["control_token"]
    # What the walk-through did is in the warehouse: 300 orders + 2 created, one deleted upstream
    # (still in the warehouse: only a sweep marks it); a run row per sync.
    with duckdb.connect(str(clean_env / DEFAULT_DB), read_only=True) as con:
        assert con.execute("select count(*) from ciklek.orders").fetchone() == (302,)
        kinds = con.execute("select count(*) from ciklek._ciklek_sync_runs").fetchone()
        assert kinds is not None and kinds[0] >= 3
    assert "run: sync into duckdb" in stdout
