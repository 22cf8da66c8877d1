"""docs/commands.md: its "Exit codes" section is the code's table, `EXIT_CODES`, exactly."""

from __future__ import annotations

from pathlib import Path

from connector.errors import EXIT_CODES, EXIT_PRECEDENCE, exit_codes_markdown, exit_codes_text

PAGE = Path(__file__).resolve().parents[2] / "docs" / "commands.md"


def page_section(title: str) -> str:
    """The section's text, up to the next `## ` heading or the end of the page."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n") + len(f"\n## {title}\n")
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)].strip()


def test_docs_exit_code_table_matches_the_code_table_exactly() -> None:
    section = page_section("Exit codes")
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[1:]]
    assert cells == [[str(e.code), e.meaning, e.action] for e in EXIT_CODES]
    assert section.startswith(exit_codes_markdown())


def test_codes_are_the_contracts_and_precedence_lists_every_outcome_but_2() -> None:
    assert [e.code for e in EXIT_CODES] == [0, 1, 2, 3, 4, 5, 6, 7, 75]
    assert sorted(EXIT_PRECEDENCE) == [0, 1, 3, 4, 6, 7, 75]
    assert "the first of 1, 3, 7, 75, 6, 4, 0 wins" in page_section("Exit codes")


def test_help_shows_every_code() -> None:
    text = exit_codes_text()
    for e in EXIT_CODES:
        assert f"  {e.code:>3}  " in text
