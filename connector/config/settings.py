"""Settings: read through dlt's config providers, validated once, before any request.

Why a configspec rather than loose `dlt.config.value` arguments: the CLI must reject a bad page
size or an unknown resource (exit 2) *before* it builds a pipeline, and every key needs a default
in code because dlt only reads `.dlt/` from the working directory while `ciklek` must work from
anywhere. Every key here works from `.dlt/config.toml`, `.dlt/secrets.toml` and the environment
(`SOURCES__CIKLEK__<KEY>`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.configuration.specs import BaseConfiguration
from dlt.common.typing import TSecretStrValue

from connector.catalogue import RESOURCE_NAMES, ResourceSpec, build_catalogue, parse_name_list
from connector.config.accounts import ACCOUNT_NAME, missing_scoped_key, pipeline_scope
from connector.config.redaction import ApiKey, HashKey
from connector.config.urls import normalize_base_url, relative_path
from connector.errors import ConfigError

DEFAULT_BASE_URL = "https://api.ciklek.com/v1"
MAX_PAGE_SIZE = 100  # the contract: limit is 1..100
DOCUMENTED_PER_MINUTE = 120
DOCUMENTED_PER_DAY = 50_000
# How far behind its watermark an incremental sync re-reads, so a change that reaches the API
# after a sync passed its `updated_at` (replication lag, a long transaction, a clock behind) is
# still loaded. 15 minutes: a soak measured late commits of 2-600 s (at 900 s none was missed),
# and the ranges already assume clocks within 15 minutes (traversal/ranges.py CLOCK_MARGIN). Why
# and what it costs: docs/how-a-sync-works.md, "Late records".
DEFAULT_LOOKBACK_SECONDS = 900.0
# dlt coerces a configspec field to its type hint; these take a list *or* a string *or* a table
# as the user wrote it, so they are left to our own parsers (parse_name_list, build_catalogue).
AsWritten = Any


@configspec
class CiklekConfiguration(BaseConfiguration):
    """`[sources.ciklek]` as dlt resolves it; see docs/configuration.md."""

    api_key: TSecretStrValue | None = None
    base_url: str = DEFAULT_BASE_URL
    page_size: int = 100
    resources: AsWritten | None = None
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
    lookback_seconds: float = DEFAULT_LOOKBACK_SECONDS
    history: AsWritten | None = None
    money_fields: AsWritten | None = None
    exclude_fields: AsWritten | None = None
    hash_fields: AsWritten | None = None
    hash_key: TSecretStrValue | None = None
    catalogue: dict[str, AsWritten] | None = None
    state_dir: str | None = None
    progress_interval_seconds: float = 10.0
    request_deadline_seconds: float = 120.0
    destination_lock_wait_seconds: float = 30.0
    duckdb_read_copy: str | None = None
    deletes: str = "soft"
    sweep_max_delete_share: float = 0.10
    sweep_reserve: int | None = None
    sweep_run_requests: int = 1_800
    accounts: AsWritten | None = None
    max_concurrency: int = 4
    schema_changes: str = "evolve"


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
    request_deadline_seconds: float = 120.0
    destination_lock_wait_seconds: float = 30.0
    duckdb_read_copy: Path | None = None
    deletes: str = "soft"  # "soft": mark _ciklek_deleted_at; "hard": remove the rows
    sweep_max_delete_share: float = 0.10
    sweep_reserve: int = 0  # requests of the daily budget a sweep leaves to syncs
    sweep_run_requests: int = 1_800
    accounts: tuple[str, ...] = ()
    max_concurrency: int = 4  # resources traversed at once (1: one after the other)
    schema_changes: str = "evolve"  # "freeze": no column is ever added by itself
    history: tuple[str, ...] = ()  # resources whose every version is kept (`<name>_versions`)
    # Why there is no key, when the generic message would mislead (an account's scoped key).
    key_problem: str | None = None
    hash_key: HashKey | None = None  # the HMAC key of `hash_fields` (catalogue: spec.hashed)

    @property
    def hashes_fields(self) -> bool:
        return any(spec.hashed for spec in self.catalogue.values())

    def require_hash_key(self) -> HashKey | None:
        """The key when fields are hashed; ConfigError (exit 2, before any request) when it is
        missing: loading them in clear is never the fallback."""
        if not self.hashes_fields:
            return None
        if self.hash_key is None:
            hashed = sorted(e for spec in self.catalogue.values() for e in spec.hashed)
            raise ConfigError(
                f"hash_fields ({', '.join(hashed)}) is set but there is no hash_key: set "
                "SOURCES__CIKLEK__HASH_KEY or hash_key under [sources.ciklek] in "
                ".dlt/secrets.toml (any long random string; keep it: another key gives other "
                "hashes)"
            )
        return self.hash_key

    def require_key(self) -> ApiKey:
        if self.key_problem is not None:
            raise ConfigError(self.key_problem)
        if self.api_key is None or not self.api_key.reveal().strip():
            raise ConfigError(
                "no API key: set SOURCES__CIKLEK__API_KEY or api_key under [sources.ciklek] "
                "in .dlt/secrets.toml (Portal -> Settings -> API Keys)"
            )
        return self.api_key


def default_state_dir() -> Path:
    """Where locks, the quota ledger, status files and dlt's working dirs live."""
    env = os.environ.get("CIKLEK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ciklek"


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value:g}")


def load_settings(**overrides: object) -> Settings:
    """Resolve `[sources.ciklek]` through dlt's providers, apply CLI overrides, validate.

    Raises ConfigError (exit 2) with one line naming the setting and what to do.
    """
    pipeline = overrides.pop("pipeline", None)  # dlt's pipeline-scoped values win (accounts.py)
    try:
        with pipeline_scope(str(pipeline) if pipeline else None):
            raw = resolve_configuration(CiklekConfiguration(), sections=("sources", "ciklek"))
    except ConfigurationException as exc:
        raise ConfigError(f"configuration: {_first_line(exc)}") from None
    values: dict[str, object] = {k: getattr(raw, k) for k in raw}
    values.update({k: v for k, v in overrides.items() if v is not None})
    key_problem = None  # an account never falls back to the unscoped key (accounts.py)
    if pipeline and str(pipeline) in parse_name_list(values.get("accounts"), "accounts"):
        key_problem = missing_scoped_key(str(pipeline))

    page_size = _as_int("page_size", values["page_size"])
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigError(
            f"page_size must be between 1 and {MAX_PAGE_SIZE} (the API's limit), got {page_size}"
        )
    overrides_table = values.get("catalogue")
    catalogue = build_catalogue(
        overrides_table if isinstance(overrides_table, Mapping) else None,
        money_fields=parse_name_list(values.get("money_fields"), "money_fields"),
        exclude_fields=parse_name_list(values.get("exclude_fields"), "exclude_fields"),
        hash_fields=parse_name_list(values.get("hash_fields"), "hash_fields"),
    )
    for name, spec in catalogue.items():
        relative_path(spec.path, f"catalogue.{name}.path")  # the one URL rule, at start-up
    names = parse_name_list(values.get("resources"), "resources")
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise ConfigError(
            f"unknown resource {', '.join(map(repr, unknown))}; valid resources: "
            f"{', '.join(RESOURCE_NAMES)}"
        )
    ints = {name: _as_int(name, values[name]) for name in _POSITIVE_INTS}
    floats = {name: _as_float(name, values[name]) for name in _POSITIVE_FLOATS}
    for name, number in (*ints.items(), *floats.items()):
        _positive(name, number, 1 if name in _POSITIVE_INTS else 0.001)
    if _as_float("lookback_seconds", values["lookback_seconds"]) < 0:
        raise ConfigError("lookback_seconds must be 0 or more")
    state_dir = values.get("state_dir")
    budget = _daily_budget(values)
    return Settings(
        **_operations(values, budget),
        api_key=None if key_problem else _api_key(values.get("api_key")),
        key_problem=key_problem,
        hash_key=_hash_key(values.get("hash_key")),
        base_url=normalize_base_url(str(values["base_url"])),
        page_size=page_size,
        resources=tuple(dict.fromkeys(names)) if names else tuple(catalogue),
        history=_history(values.get("history"), catalogue),
        resources_named=bool(names),
        catalogue=catalogue,
        daily_request_budget=budget,
        max_rate_limit_waits=_as_int("max_rate_limit_waits", values["max_rate_limit_waits"]),
        lookback_seconds=_as_float("lookback_seconds", values["lookback_seconds"]),
        state_dir=Path(str(state_dir)).expanduser() if state_dir else default_state_dir(),
        progress_interval_seconds=_as_float(
            "progress_interval_seconds", values["progress_interval_seconds"]
        ),
        requests_per_minute=ints["requests_per_minute"],
        max_attempts=ints["max_attempts"],
        checkpoint_pages=ints["checkpoint_pages"],
        max_wait_seconds=floats["max_wait_seconds"],
        connect_timeout=floats["connect_timeout"],
        read_timeout=floats["read_timeout"],
        checkpoint_seconds=floats["checkpoint_seconds"],
        request_deadline_seconds=floats["request_deadline_seconds"],
    )


class _Operations(TypedDict):
    destination_lock_wait_seconds: float
    duckdb_read_copy: Path | None
    deletes: str
    sweep_max_delete_share: float
    sweep_reserve: int
    sweep_run_requests: int
    accounts: tuple[str, ...]
    max_concurrency: int
    schema_changes: str


def _operations(values: Mapping[str, object], budget: int) -> _Operations:
    """The settings of the warehouse side, sweeps and accounts (docs/configuration.md)."""
    wait = _as_float("destination_lock_wait_seconds", values["destination_lock_wait_seconds"])
    if wait < 0:
        raise ConfigError("destination_lock_wait_seconds must be 0 or more")
    deletes = str(values["deletes"]).strip().lower()
    if deletes not in ("soft", "hard"):
        raise ConfigError(f'deletes must be "soft" or "hard", got {values["deletes"]!r}')
    share = _as_float("sweep_max_delete_share", values["sweep_max_delete_share"])
    if not 0 <= share <= 1:
        raise ConfigError(f"sweep_max_delete_share must be between 0 and 1, got {share:g}")
    raw_reserve = values.get("sweep_reserve")
    reserve = budget // 5 if raw_reserve is None else _as_int("sweep_reserve", raw_reserve)
    if not 0 <= reserve < budget:
        raise ConfigError(
            f"sweep_reserve must be between 0 and the daily budget ({budget:,}), got {reserve:,}"
        )
    run_requests = _as_int("sweep_run_requests", values["sweep_run_requests"])
    _positive("sweep_run_requests", run_requests)
    accounts = parse_name_list(values.get("accounts"), "accounts")
    bad = [a for a in accounts if not ACCOUNT_NAME.match(a)]
    if bad:
        raise ConfigError(
            f"accounts: {', '.join(map(repr, bad))} must match [a-z][a-z0-9_]* (lower-case "
            "letters, digits and underscores, starting with a letter)"
        )
    copy = values.get("duckdb_read_copy")
    concurrency = _as_int("max_concurrency", values.get("max_concurrency", 4))
    _positive("max_concurrency", concurrency)
    schema_changes = str(values.get("schema_changes") or "evolve").strip().lower()
    if schema_changes not in ("evolve", "freeze"):
        raise ConfigError(
            f'schema_changes must be "evolve" or "freeze", got {values.get("schema_changes")!r}'
        )
    return {
        "destination_lock_wait_seconds": wait,
        "duckdb_read_copy": Path(str(copy)).expanduser().absolute() if copy else None,
        "deletes": deletes,
        "sweep_max_delete_share": share,
        "sweep_reserve": reserve,
        "sweep_run_requests": run_requests,
        "accounts": tuple(dict.fromkeys(accounts)),
        "max_concurrency": concurrency,
        "schema_changes": schema_changes,
    }


def _history(value: object, catalogue: Mapping[str, ResourceSpec]) -> tuple[str, ...]:
    """`history`: resources whose every version is kept; line items come with their orders."""
    names = parse_name_list(value, "history")
    children = {spec.child.table: name for name, spec in catalogue.items() if spec.child}
    for name in names:
        if name in children:
            raise ConfigError(
                f"history: {name!r} is kept with {children[name]!r} (each version of an order "
                f"keeps its line items): name {children[name]!r}"
            )
        if name not in catalogue:
            raise ConfigError(
                f"history: unknown resource {name!r}; valid resources: {', '.join(catalogue)}"
            )
    return tuple(dict.fromkeys(names))


_POSITIVE_INTS = ("requests_per_minute", "max_attempts", "checkpoint_pages")
_POSITIVE_FLOATS = (
    "max_wait_seconds",
    "connect_timeout",
    "read_timeout",
    "checkpoint_seconds",
    "request_deadline_seconds",
)


def _api_key(value: object) -> ApiKey | None:
    key = str(value or "").strip()  # a pasted key often ends in a newline
    if any(ch.isspace() for ch in key):
        raise ConfigError("api_key contains whitespace; paste the key exactly as the Portal shows")
    return ApiKey(key) if key else None


def _hash_key(value: object) -> HashKey | None:
    key = str(value or "").strip()
    return HashKey(key) if key else None


def _daily_budget(values: Mapping[str, object]) -> int:
    """`daily_request_budget`, else the documented quota minus the reserve for other users."""
    raw = values.get("daily_request_budget")
    if raw is not None:
        budget = _as_int("daily_request_budget", raw)
    else:
        quota = _as_int("daily_quota", values["daily_quota"])
        budget = quota - _as_int("quota_reserve", values["quota_reserve"])
    _positive("daily_request_budget", budget)
    return budget


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (OverflowError, ValueError):
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if number != number:  # NaN compares false with every bound
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return number


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
