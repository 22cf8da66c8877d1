"""The URL rule: every request goes to `base_url` + a relative path, and the key never travels
in clear text.

Why here, at start-up: a `base_url` with plain HTTP to another host, user info, or a query, and a
catalogue path with a scheme or a host, would send the key somewhere it should not go. Each is
refused (exit 2) before any request; the client checks the URL it is about to send once more.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from connector.config.redaction import register_secret
from connector.errors import ConfigError
from connector.printable import clean_output


def normalize_base_url(url: str) -> str:
    """Strip a trailing slash; refuse what would send the key somewhere it should not go.

    Plain HTTP only on loopback (the key would travel in clear text). No user info: httpx
    would swap our bearer header for Basic auth with it, and the password would show in logs.
    No query or fragment: every request URL is this base plus a relative path, nothing else.
    Messages show the URL with any user info replaced by ***.
    """
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced [ in the host
        raise ConfigError(f"base_url {_redacted(url)!r} is not a valid URL") from None
    if parts.password:
        register_secret(parts.password)
    shown = _redacted(url)
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"base_url {shown!r} is not an http(s) URL")
    if "@" in parts.netloc:
        raise ConfigError(
            f"base_url {shown!r} contains user info (user:password@); remove it: the API key "
            "goes in api_key / SOURCES__CIKLEK__API_KEY"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(
            f"base_url {shown!r} has a query or fragment; give scheme, host and path only "
            "(https://api.ciklek.com/v1)"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"base_url {shown!r} uses plain HTTP; the API key would travel in clear text. "
            "Use https:// (plain http is allowed only for loopback hosts such as the sandbox)"
        )
    return url


def is_plain_http_loopback(base_url: str) -> bool:
    """A sandbox-style base URL: plain HTTP to this machine, which no proxy should ever see."""
    parts = urlsplit(base_url)
    return parts.scheme == "http" and _is_loopback(parts.hostname or "")


def relative_path(path: str, setting: str) -> str:
    """`path` as the relative part of a request URL, or ConfigError (exit 2).

    The one URL rule: every request goes to base_url + a relative path. A path with a scheme
    (`http://elsewhere/steal`), a host, or a leading `//` or backslash would send the key to
    another host, perhaps in clear text.
    """
    try:
        parts: SplitResult | None = urlsplit(path)
    except ValueError:
        parts = None
    stripped = path.strip()
    if (
        parts is None
        or parts.scheme
        or parts.netloc
        or stripped.startswith("//")
        or "\\" in path
        or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path)
    ):
        raise ConfigError(
            f"{setting} {clean_output(path)!r} is not a relative path; give the path below "
            'base_url only (e.g. "orders"), never a scheme or a host'
        )
    return path


def _redacted(url: str) -> str:
    """`url` with anything before an @ in its authority replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.split("@", 1)[-1] if "@" in url else url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{slash}{tail}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
