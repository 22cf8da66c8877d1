"""The tables and their columns as docs/tables.md describes them, read from that page.

Why the page and not a copy in code: an operator reads the same words in the docs and in the
Dagster UI (asset descriptions, the Columns section), and there is one place to change them:
"The tables" (key, where a table comes from) and "Every column" (type, meaning). The page is
part of this repository, beside `pipelines/`, which is run from a checkout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
DATA_TABLES = ("orders", "order_line_items", "customers", "products")
_NAME = re.compile(r"`([^`]+)`")
_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class TableDoc:
    """One row of "The tables": the key and where the rows come from (markdown)."""

    key: str
    source: str


@dataclass(frozen=True)
class ColumnDoc:
    """One column of "Every column": its type in DuckDB and what it means (markdown)."""

    type: str
    meaning: str


@dataclass(frozen=True)
class TablesDoc:
    """Both tables of the page; `undocumented` is the row for fields the API does not document."""

    tables: dict[str, TableDoc]
    columns: dict[str, dict[str, ColumnDoc]] = field(default_factory=dict)
    undocumented: ColumnDoc | None = None

    def column(self, table: str, name: str) -> ColumnDoc | None:
        """A column's doc; an undocumented field's column gets the undocumented row's."""
        found = self.columns.get(table, {}).get(name)
        return found if found is not None else self.undocumented


def read_tables_doc(page: Path = DOCS_PAGE) -> TablesDoc:
    """Parse the page; a missing page or section is a clear error, not empty descriptions."""
    try:
        text = page.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(
            f"the Dagster assets read their table and column descriptions from {page}: "
            f"keep pipelines/ beside docs/ (run it from a checkout) ({exc.strerror})"
        ) from None
    overview = _rows(_section(text, "The tables", page))
    tables = {
        name: TableDoc(key=cells[1], source=cells[2])
        for cells in overview
        for name in _NAME.findall(cells[0])[:1]
    }
    columns: dict[str, dict[str, ColumnDoc]] = {}
    undocumented: ColumnDoc | None = None
    owners: list[str] = []
    for cells in _rows(_section(text, "Every column", page)):
        owners = _owners(cells[0]) or owners
        doc = ColumnDoc(type=cells[2].strip("`"), meaning=cells[3])
        names = _NAME.findall(cells[1])
        if not names and cells[1].startswith("undocumented fields"):
            undocumented = doc
        for table in owners:
            for name in names:
                columns.setdefault(table, {})[name] = doc
    return TablesDoc(tables, columns, undocumented)


def _section(text: str, title: str, page: Path) -> str:
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise RuntimeError(f"{page}: no section '## {title}' (the Dagster assets read it)")
    return match.group(1)


def _rows(section: str) -> Iterator[list[str]]:
    """The body rows of the section's first table, cells stripped (header and rule skipped)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    for line in lines[2:]:
        cells = [c.strip().replace("\\|", "|") for c in _SPLIT.split(line.strip())[1:-1]]
        if len(cells) >= 3:
            yield cells


def _owners(cell: str) -> list[str]:
    """The tables a row of "Every column" is about: named, "all four", or (empty) as above."""
    if cell == "all four":
        return list(DATA_TABLES)
    return _NAME.findall(cell)
