"""The layers hold (docs/development.md): CI runs `make test`, not `make lint`, so the import
contracts and the function-import rule are checked here too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from check_function_imports import offences  # noqa: E402


def test_every_import_linter_contract_is_kept() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_no_connector_module_is_imported_inside_a_function_outside_the_cli() -> None:
    assert offences() == []


def test_the_rule_finds_a_function_import(tmp_path: Path) -> None:
    module = tmp_path / "connector" / "runs" / "late.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from connector.errors import ConfigError\n    return 1\n")
    cli = tmp_path / "connector" / "cli" / "lazy.py"
    cli.parent.mkdir(parents=True)
    cli.write_text("def g():\n    from connector.runs import late\n")
    assert offences(tmp_path) == ["connector/runs/late.py:2 in f(): import connector.errors"]
