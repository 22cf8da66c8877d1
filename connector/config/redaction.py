"""The API key wrapper and the known secrets: nothing we print, log or store may show one.

Why a register of secrets rather than care at each print: an exception, a server's echo or a
driver's message can quote anything, so every line leaves through `scrub()`, which knows every
secret this process has seen (the API key, a warehouse password, a password in a URL).
"""

from __future__ import annotations

import hashlib

from connector.printable import clean_output

_KNOWN_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so `scrub()` removes it from anything printed or logged."""
    if value and value.strip():  # a blank "key" is no secret; replacing it would mangle text
        _KNOWN_SECRETS.add(value)
        if value.strip() != value:
            _KNOWN_SECRETS.add(value.strip())


def scrub(text: str) -> str:
    """The last line of defence for anything printed, logged or stored: every known secret
    becomes ***, and control characters (a server's ESC, OSC 52, BEL, CR) are escaped."""
    for secret in _KNOWN_SECRETS:
        text = text.replace(secret, "***")
    return clean_output(text)


class Secret:
    """A secret, wrapped so no repr, log line or exception can show it by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(***)"

    __str__ = __repr__


class ApiKey(Secret):
    """The Ciklek API key."""

    __slots__ = ()

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id for the ledger and the limiter registry."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:16]


class HashKey(Secret):
    """The key of `hash_fields`' HMAC: without it nobody can test a guess against a hash."""

    __slots__ = ()
