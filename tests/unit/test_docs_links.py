"""README.md and docs/*.md hold together: every relative link and #anchor resolves.

Anchors follow GitHub's heading slugs: the heading's text (inline code and links reduced to their
text), lower-cased, every character but letters, digits, `-`, `_` and spaces removed, spaces
turned into `-`; a repeated heading gets `-1`, `-2`, ... Headings and links inside fenced code
blocks and code spans do not count. The README stays a short front door that links every page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.markdown import DOCS, README, pages, prose_lines

README_MAX_LINES = 200

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before duplicates are numbered)."""
    text = LINK.sub(lambda m: re.sub(r"^!?\[|\]\(.*$", "", m.group(0), flags=re.S), heading)
    text = CODE_SPAN.sub(lambda m: m.group(2), text)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Every link target of the page's prose (code spans and fenced blocks left out)."""
    text = "\n".join(prose_lines(path))
    text = CODE_SPAN.sub("", text)
    return LINK.findall(text)


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) is not None


def broken_links(path: Path) -> list[str]:
    broken: list[str] = []
    for target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not markdown")
    return broken


def test_the_slug_rules_are_githubs() -> None:
    assert slug("Sweeps: rows deleted upstream") == "sweeps-rows-deleted-upstream"
    assert slug("`ciklek sandbox` flags") == "ciklek-sandbox-flags"
    assert slug("How a sync works (and why it is cheap and safe)") == (
        "how-a-sync-works-and-why-it-is-cheap-and-safe"
    )
    assert slug("Runs, days, and the lock") == "runs-days-and-the-lock"
    assert slug("run_sync and SyncResult") == "run_sync-and-syncresult"
    assert slug("Tables (dataset `ciklek`)") == "tables-dataset-ciklek"
    assert slug("See [the docs](docs/x.md) now") == "see-the-docs-now"


def test_duplicate_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A\n\n## Notes\n\n```sh\n# Notes\n```\n\n## Notes\n\n### Notes\n")
    assert anchors(page) == {"a", "notes", "notes-1", "notes-2"}


def test_there_are_docs_pages() -> None:
    assert len(pages()) > 1, "docs/*.md is empty"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_is_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_every_docs_page() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in links(README)
        if not is_external(target) and target.partition("#")[0]
    }
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert unlinked == []


def test_make_demo_is_on_the_readmes_first_screen() -> None:
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:25])
    assert "make demo" in first_screen and "make test" in first_screen
