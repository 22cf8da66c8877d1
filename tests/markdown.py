"""The docs as the tests read them: README.md and docs/*.md, their prose and fenced blocks."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language (the info string's first word) and its text."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md first, then every docs page."""
    return [README, *sorted(DOCS.glob("*.md"))]


def _scan(page: Path) -> tuple[list[str], list[Block]]:
    prose: list[str] = []
    blocks: list[Block] = []
    opened: tuple[int, str, str, str] | None = None  # line, indent, fence, lang
    body: list[str] = []
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if opened is None:
            if match:
                opened = (n, match.group(1), match.group(2), match.group(3))
                body = []
            else:
                prose.append(line)
        elif match and match.group(2).startswith(opened[2]) and not match.group(3):
            text = textwrap.dedent("\n".join(body)) + "\n" if body else ""
            blocks.append(Block(page, opened[0], opened[3], text))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{page.name}:{opened[0]}: a fenced block is never closed"
    return prose, blocks


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    return _scan(page)[0]


def blocks(page: Path, lang: str | None = None) -> list[Block]:
    """The page's fenced blocks, in order (only those of `lang` when given)."""
    found = _scan(page)[1]
    return [b for b in found if lang is None or b.lang == lang]


def commands(block: Block) -> list[str]:
    """The commands of an `sh` block: one per line (a trailing backslash continues it);
    blank lines and comment lines left out."""
    found: list[str] = []
    pending = ""
    for line in block.text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        found.append(pending + stripped)
        pending = ""
    assert not pending, f"{block.where}: a command continues past the end of its block"
    return found
