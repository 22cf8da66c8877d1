"""docs/development.md's layout table lists exactly the modules under connector/.

One row per `.py` module, read from the tree (not a list kept here); the sandbox is one row,
`connector/sandbox/`; a sub-package's `__init__.py` is a package marker the page names in its
prose, not a row. A module added, moved or removed without its row fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "connector"
PAGE = ROOT / "docs" / "development.md"
SECTION = "## How the code is laid out"
SANDBOX = "connector/sandbox/"


def table_paths() -> list[str]:
    """The first cell of each row of the section's table, when it is a `connector/...` path."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^\| `(connector/[^`]*)` \|", section, flags=re.M)


def tree_paths() -> set[str]:
    """Every module of the package as a row names it."""
    paths: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if "__pycache__" in rel.parts:
            continue
        if rel.parts[:2] == ("connector", "sandbox"):
            paths.add(SANDBOX)
        elif path.name == "__init__.py" and path.parent != PACKAGE:
            continue  # a sub-package's marker, named in the page's prose
        else:
            paths.add(rel.as_posix())
    return paths


def test_the_layout_table_has_one_row_per_module_and_no_other() -> None:
    rows = table_paths()
    assert len(rows) == len(set(rows)), "a module has two rows"
    listed, actual = set(rows), tree_paths()
    assert sorted(actual - listed) == [], "modules without a row in docs/development.md"
    assert sorted(listed - actual) == [], "rows for modules that do not exist"


def test_the_page_names_every_sub_package_marker() -> None:
    text = PAGE.read_text(encoding="utf-8")
    prose = text[text.index(SECTION) : text.index("| module |")]
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        if init.parent.name != "sandbox":
            assert f"`{init.parent.name}/`" in prose, init.relative_to(ROOT)
