"""No connector module is imported inside a function, except in connector/cli/.

Why: an import inside a function hides a dependency from the reader (and used to hide import
cycles); only the CLI may import lazily, for start-up time (`ciklek --version` must not load
dlt). import-linter checks the layers and cycles; this checks the one rule it cannot express.
Run by `make lint`; exits 1 and lists each offending import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ("connector/cli/",)


def offences(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / "connector").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and (node.level or node.module):
                    names = ["." * node.level + (node.module or "")]
                for name in names:
                    if name.startswith(("connector", ".")):
                        found.append(f"{rel}:{node.lineno} in {func.name}(): import {name}")
    return found


if __name__ == "__main__":
    lines = offences()
    print("\n".join(lines) or "no connector import inside a function outside connector/cli/")
    sys.exit(1 if lines else 0)
