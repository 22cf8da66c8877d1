"""A SIGTERM that reaches the Dagster op after its sync decided the outcome changes nothing: the
materialisation records what was loaded and the run succeeds (issue 21, the op's part).

The op runs in a child process (a real signal must not reach the test runner), with its summary
step patched to send the process a SIGTERM: the moment after `run_sync` returned.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEFAULT_DB, query
from tests.sandbox_proc import REPO_ROOT, SandboxProcess

pytest.importorskip("dagster")

_OP_SIGNALLED = """
import os, signal, sys, importlib.util
spec = importlib.util.spec_from_file_location("defs", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import ciklek_dagster.assets as assets
summary_line = assets.summary_line
def signalled(result):
    os.kill(os.getpid(), signal.SIGTERM)  # after the decision, while the op reports
    return summary_line(result)
assets.summary_line = signalled
from dagster import materialize
result = materialize([module.make_assets()], raise_on_error=False)
print("success" if result.success else "failed")
sys.exit(0 if result.success else 3)
"""


def test_a_sigterm_after_the_op_decided_leaves_a_successful_materialisation(
    sandbox_factory: Any, clean_env: Path
) -> None:
    sb: SandboxProcess = sandbox_factory("--orders", 40, "--customers", 5, "--products", 5)
    env = {
        **os.environ,
        "SOURCES__CIKLEK__BASE_URL": sb.url,
        "SOURCES__CIKLEK__API_KEY": sb.key,
    }
    definitions = str(REPO_ROOT / "pipelines" / "dagster_definitions.py")
    done = subprocess.run(
        [sys.executable, "-c", _OP_SIGNALLED, definitions],
        env=env,
        cwd=clean_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "success"
    rows = query(clean_env / DEFAULT_DB, "select outcome from ciklek._ciklek_sync_runs")
    assert rows == [("completed",)]
