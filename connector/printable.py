"""Printable text: control characters escaped in anything that came from a server.

Why: a server's error message (or a hostile proxy's) is printed to a terminal, logged, stored in
`status.json` and `_ciklek_sync_runs.message`, and printed again by `ciklek status`. Raw, it can
set the window title, clear the screen, rewrite the line before it (CR), or write the clipboard
(OSC 52). We escape rather than drop, so what the server said stays readable and diagnosable:
ESC becomes the four characters `\\x1b`.

Two strengths:

- `clean()` for one server-supplied field (a message, an error code): every control character
  is escaped, line breaks and tabs included, so one field stays one line.
- `clean_output()` for a whole text we print (tables, tracebacks): line breaks and tabs are our
  own layout and stay; every other control character is escaped.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI on some terminals), and the Unicode
# bidirectional overrides/isolates that make text display in another order than it reads.
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ANY_CONTROL = re.compile(f"[\x00-\x1f{_OTHERS}]")
_CONTROL_NOT_LAYOUT = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")  # keeps \t (09) and \n (0a)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean(text: str) -> str:
    """One server-supplied field, made printable on one line."""
    return _ANY_CONTROL.sub(_escape, text)


def clean_output(text: str) -> str:
    """A whole text about to be printed: keep its line breaks and tabs, escape the rest."""
    return _CONTROL_NOT_LAYOUT.sub(_escape, text)
