"""Settings: read through dlt's config providers, validated once, before any request.

Why a configspec rather than loose `dlt.config.value` arguments: the CLI must reject a bad page
size or an unknown resource (exit 2) *before* it builds a pipeline, and every key needs a default
in code because dlt only reads `.dlt/` from the working directory while `ciklek` must work from
anywhere. Every key here works from `.dlt/config.toml`, `.dlt/secrets.toml` and the environment
(`SOURCES__CIKLEK__<KEY>`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.configuration.specs import BaseConfiguration
from dlt.common.typing import TSecretStrValue

from connector.catalogue import RESOURCE_NAMES, ResourceSpec, build_catalogue, parse_name_list
from connector.errors import ConfigError

DEFAULT_BASE_URL = "https://api.ciklek.com/v1"
MAX_PAGE_SIZE = 100  # the contract: limit is 1..100
DOCUMENTED_PER_MINUTE = 120
DOCUMENTED_PER_DAY = 50_000


@configspec
class CiklekConfiguration(BaseConfiguration):
    """`[sources.ciklek]` as dlt resolves it; see README "Configuration reference"."""

    api_key: TSecretStrValue | None = None
    base_url: str = DEFAULT_BASE_URL
    page_size: int = 100
    resources: Any | None = None
    requests_per_minute: int = DOCUMENTED_PER_MINUTE
    daily_quota: int = DOCUMENTED_PER_DAY
    quota_reserve: int = 2_500
    daily_request_budget: int | None = None
    max_wait_seconds: float = 120.0
    max_attempts: int = 6
    max_rate_limit_waits: int = 30
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    checkpoint_pages: int = 100
    checkpoint_seconds: float = 60.0
    lookback_seconds: float = 0.0
    money_fields: Any | None = None
    exclude_fields: Any | None = None
    catalogue: dict[str, Any] | None = None
    state_dir: str | None = None
    progress_interval_seconds: float = 10.0


_KNOWN_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so `scrub()` removes it from anything printed or logged."""
    if value and value.strip():  # a blank "key" is no secret; replacing it would mangle text
        _KNOWN_SECRETS.add(value)
        if value.strip() != value:
            _KNOWN_SECRETS.add(value.strip())


def scrub(text: str) -> str:
    """Replace every known secret in `text` with ***: the last line of defence for output."""
    for secret in _KNOWN_SECRETS:
        text = text.replace(secret, "***")
    return text


class ApiKey:
    """The secret, wrapped so no repr, log line or exception can show it by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id for the ledger and the limiter registry."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with `load_settings()`."""

    api_key: ApiKey | None
    base_url: str
    page_size: int
    resources: tuple[str, ...]
    resources_named: bool
    catalogue: dict[str, ResourceSpec]
    requests_per_minute: int
    daily_request_budget: int
    max_wait_seconds: float
    max_attempts: int
    max_rate_limit_waits: int
    connect_timeout: float
    read_timeout: float
    checkpoint_pages: int
    checkpoint_seconds: float
    lookback_seconds: float
    state_dir: Path
    progress_interval_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def require_key(self) -> ApiKey:
        if self.api_key is None or not self.api_key.reveal().strip():
            raise ConfigError(
                "no API key: set SOURCES__CIKLEK__API_KEY or api_key under [sources.ciklek] "
                "in .dlt/secrets.toml (Portal -> Settings -> API Keys)"
            )
        return self.api_key


def normalize_base_url(url: str) -> str:
    """Strip a trailing slash and refuse plain HTTP except on loopback (the key would leak)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"base_url {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"base_url {url!r} uses plain HTTP; the API key would travel in clear text. "
            "Use https:// (plain http is allowed only for loopback hosts such as the sandbox)"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_state_dir() -> Path:
    """Where locks, the quota ledger, status files and dlt's working dirs live."""
    env = os.environ.get("CIKLEK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ciklek"


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value:g}")


def load_settings(**overrides: Any) -> Settings:
    """Resolve `[sources.ciklek]` through dlt's providers, apply CLI overrides, validate.

    Raises ConfigError (exit 2) with one line naming the setting and what to do.
    """
    try:
        raw = resolve_configuration(CiklekConfiguration(), sections=("sources", "ciklek"))
    except ConfigurationException as exc:
        raise ConfigError(f"configuration: {_first_line(exc)}") from None
    values: dict[str, Any] = {k: getattr(raw, k) for k in raw}
    values.update({k: v for k, v in overrides.items() if v is not None})

    page_size = _as_int("page_size", values["page_size"])
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigError(
            f"page_size must be between 1 and {MAX_PAGE_SIZE} (the API's limit), got {page_size}"
        )
    catalogue = build_catalogue(
        values.get("catalogue"),
        money_fields=parse_name_list(values.get("money_fields"), "money_fields"),
        exclude_fields=parse_name_list(values.get("exclude_fields"), "exclude_fields"),
    )
    names = parse_name_list(values.get("resources"), "resources")
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise ConfigError(
            f"unknown resource {', '.join(map(repr, unknown))}; valid resources: "
            f"{', '.join(RESOURCE_NAMES)}"
        )
    resources = tuple(dict.fromkeys(names)) if names else tuple(catalogue)

    daily_quota = _as_int("daily_quota", values["daily_quota"])
    budget_raw = values.get("daily_request_budget")
    reserve = _as_int("quota_reserve", values["quota_reserve"])
    budget = (
        _as_int("daily_request_budget", budget_raw)
        if budget_raw is not None
        else daily_quota - reserve
    )
    _positive("daily_request_budget", budget)
    for name in ("requests_per_minute", "max_attempts", "checkpoint_pages"):
        _positive(name, _as_int(name, values[name]))
    for name in ("max_wait_seconds", "connect_timeout", "read_timeout", "checkpoint_seconds"):
        _positive(name, float(values[name]), 0.001)
    if float(values["lookback_seconds"]) < 0:
        raise ConfigError("lookback_seconds must be 0 or more")

    key = str(values.get("api_key") or "").strip()  # a pasted key often ends in a newline
    if any(ch.isspace() for ch in key):
        raise ConfigError("api_key contains whitespace; paste the key exactly as the Portal shows")
    state_dir = values.get("state_dir")
    return Settings(
        api_key=ApiKey(key) if key else None,
        base_url=normalize_base_url(str(values["base_url"])),
        page_size=page_size,
        resources=resources,
        resources_named=bool(names),
        catalogue=catalogue,
        requests_per_minute=_as_int("requests_per_minute", values["requests_per_minute"]),
        daily_request_budget=budget,
        max_wait_seconds=float(values["max_wait_seconds"]),
        max_attempts=_as_int("max_attempts", values["max_attempts"]),
        max_rate_limit_waits=_as_int("max_rate_limit_waits", values["max_rate_limit_waits"]),
        connect_timeout=float(values["connect_timeout"]),
        read_timeout=float(values["read_timeout"]),
        checkpoint_pages=_as_int("checkpoint_pages", values["checkpoint_pages"]),
        checkpoint_seconds=float(values["checkpoint_seconds"]),
        lookback_seconds=float(values["lookback_seconds"]),
        state_dir=Path(state_dir).expanduser() if state_dir else default_state_dir(),
        progress_interval_seconds=float(values["progress_interval_seconds"]),
    )


def _as_int(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
