"""Clean text: a server's control characters never reach a terminal, a log or a stored row."""

from __future__ import annotations

import pytest

from connector.config.redaction import register_secret, scrub
from connector.printable import clean, clean_output

ATTACKS = {
    "osc52-clipboard": "\x1b]52;c;ZXZpbA==\x07",
    "window-title": "\x1b]0;pwned\x07",
    "clear-screen": "\x1b[2J\x1b[H",
    "carriage-return": "failed\rOK     ",
    "bell": "\x07",
    "c1-csi": "\x9b31m",
    "bidi-override": "\u202etxt.exe",
    "nul-del": "\x00\x7f",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_clean_escapes_every_control_character_visibly(name: str) -> None:
    text = clean(ATTACKS[name])
    assert all(ch.isprintable() for ch in text)
    assert "\\x" in text or "\\r" in text or "\\u" in text


def test_clean_keeps_a_field_on_one_line_and_clean_output_keeps_layout() -> None:
    assert clean("a\nb\tc") == "a\\nb\\tc"
    assert clean_output("a\nb\tc\rd\x1b[0m") == "a\nb\tc\\rd\\x1b[0m"
    assert clean("Zoë — naïve ✓") == "Zoë — naïve ✓"


def test_scrub_removes_secrets_and_escapes_controls() -> None:
    register_secret("bsk_live_SCRUBTEXT_123")
    line = "key bsk_live_SCRUBTEXT_123 said \x1b]52;c;ZXZpbA==\x07\nnext line"
    assert scrub(line) == "key *** said \\x1b]52;c;ZXZpbA==\\x07\nnext line"
