"""Importing the package changes nothing global and loads only what is used.

Each check runs in a fresh interpreter: this test process has long since imported everything,
so `sys.modules` here would prove nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

INSTALL_HINT = "pip install 'ciklek-connector[sandbox]'"


def python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME__")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=base if env is None else env,
    )


def test_import_connector_leaves_environment_unchanged() -> None:
    done = python(
        "import json, os; before = dict(os.environ); import connector; "
        "print(json.dumps({'same': before == dict(os.environ), "
        "'runtime': sorted(k for k in os.environ if k.startswith('RUNTIME__'))}))"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"same": True, "runtime": []}


def test_sandbox_loads_none_of_dlt_httpx_tenacity() -> None:
    done = python(
        "import json, sys\n"
        "import connector.sandbox, connector.sandbox.server\n"
        "from connector.sandbox import SandboxConfig, build_app\n"
        "app = build_app(SandboxConfig(orders=5, customers=2, products=2))\n"
        "assert app.state.control_token\n"
        "roots = {name.split('.')[0] for name in sys.modules}\n"
        "print(json.dumps(sorted(roots & {'dlt', 'httpx', 'tenacity', 'starlette'})))"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["starlette"]  # the server's own framework, nothing else


def test_lazy_exports_resolve_to_the_defining_modules() -> None:
    done = python(
        "import sys, connector\n"
        "assert 'connector.runs.sync' not in sys.modules and 'dlt' not in sys.modules\n"
        "from connector import ciklek_source, run_sync, SyncOptions, SyncResult, CiklekClient\n"
        "import connector.runs.sync, connector.runs.source, connector.api.client\n"
        "import connector.runs.options, connector.runs.result, connector.errors\n"
        "assert run_sync is connector.runs.sync.run_sync\n"
        "assert SyncOptions is connector.runs.options.SyncOptions\n"
        "assert SyncResult is connector.runs.result.SyncResult\n"
        "assert ciklek_source is connector.runs.source.ciklek_source\n"
        "assert CiklekClient is connector.api.client.CiklekClient\n"
        "for name in connector.__all__:\n"
        "    assert getattr(connector, name) is not None, name\n"
        "assert connector.TryLater is connector.errors.TryLater\n"
        "assert issubclass(connector.LockHeld, connector.TryLater)\n"
        "try:\n"
        "    connector.no_such_thing\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "no attribute 'no_such_thing'" in done.stdout


def test_module_paths_of_earlier_releases_still_import() -> None:
    """`connector.client.CiklekClient`, `connector.sync.run_sync`: what users may have imported
    before the layers keeps working, and is the very object at the new path."""
    done = python(
        "import sys\n"
        "from connector.client import CiklekClient\n"
        "from connector.sync import SyncOptions, SyncResult, run_sync\n"
        "from connector.source import ciklek_source\n"
        "from connector.outcome import RejectsFound, SyncFailed\n"
        "from connector.settings import load_settings\n"
        "import connector.api.client, connector.runs.sync, connector.errors\n"
        "assert CiklekClient is connector.api.client.CiklekClient\n"
        "assert run_sync is connector.runs.sync.run_sync\n"
        "assert sys.modules['connector.sync'] is connector.runs.sync\n"
        "assert RejectsFound is connector.errors.RejectsFound\n"
        "import connector.sync\n"
        "assert connector.sync.run_sync is run_sync\n"
        "try:\n"
        "    import connector.no_such_module\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "No module named 'connector.no_such_module'" in done.stdout


# The CLI with the web server packages blocked, as on a production install without the extra.
_BLOCKED = "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "


@pytest.mark.parametrize("command", [["sandbox", "--port", "0"], ["demo", "--orders", "10"]])
def test_sandbox_and_demo_without_the_extra_exit_2_with_the_install_command(
    command: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "demo.duckdb"
    args = [*command, "--file", str(target)] if command[0] == "demo" else command
    done = python(
        _BLOCKED + f"from connector.cli import main; raise SystemExit(main({args!r}))",
        env={**os.environ, "CIKLEK_HOME": str(out / "home")},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and INSTALL_HINT in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(out.iterdir()) == []  # no DuckDB file, no state dir


def test_python_m_connector_sandbox_without_the_extra_exits_2() -> None:
    done = python(
        _BLOCKED + "import runpy; sys.argv = ['connector.sandbox', '--port', '0']; "
        "runpy.run_module('connector.sandbox', run_name='__main__')"
    )
    assert done.returncode == 2
    assert INSTALL_HINT in done.stderr and "Traceback" not in done.stderr
