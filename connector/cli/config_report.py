"""`ciklek config`: every setting's effective value and where it came from, secrets masked.

Why ask dlt's providers one by one: dlt resolves a value from the first provider that has it
(environment, then `.dlt/secrets.toml`, then `.dlt/config.toml`; a pipeline-scoped key before an
unscoped one), and says nothing about which one won. "Why does it use the wrong URL?" is then a
hunt through three places; this lists, like `meltano config list`, the winner for each key.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

from connector.config.settings import CiklekConfiguration, Settings, load_settings

SECTIONS = ("sources", "ciklek")
SECRET_KEYS = frozenset({"api_key", "hash_key"})
_PROVIDER_NAMES = {
    "Environment Variables": "environment",
    "secrets.toml": ".dlt/secrets.toml",
    "config.toml": ".dlt/config.toml",
}


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    source: str  # environment, .dlt/config.toml, .dlt/secrets.toml (+ pipeline-scoped), default
    where: str  # the exact key or variable that supplied it ("" for defaults)


def _found(key: str, pipeline: str | None) -> tuple[object, str, str] | None:
    """(value, source, exact key) from the first provider that has `key`, as dlt looks."""
    providers = Container()[PluggableRunContext].providers.providers
    hint = CiklekConfiguration.get_resolvable_fields()[key]
    for scope in ([pipeline] if pipeline else []) + [None]:
        for provider in providers:
            try:
                value, full_key = provider.get_value(key, hint, scope, *SECTIONS)
            except Exception:  # an unreadable provider is "not set here", not a crash
                continue
            if value is not None:
                source = _PROVIDER_NAMES.get(provider.name, provider.name)
                if scope:
                    source += f" (pipeline-scoped: {scope})"
                return value, source, full_key
    return None


def mask(key: str, value: object) -> str:
    """Secrets never print; a fingerprint tells two keys apart without revealing either."""
    if value is None or value == "":
        return "(not set)"
    if key in SECRET_KEYS:
        from connector.config.redaction import ApiKey

        return f"*** (set; fingerprint {ApiKey(str(value).strip()).fingerprint})"
    return str(value)


def _effective(settings: Settings | None, key: str, raw: object) -> object:
    """The value the connector uses: a computed default (the budget, the state dir) included."""
    if settings is not None and key not in SECRET_KEYS and hasattr(settings, key):
        value = getattr(settings, key)
        if isinstance(value, tuple):
            return ",".join(map(str, value)) if value else None
        if isinstance(value, dict):
            return raw
        return value
    return raw


def entries(pipeline: str | None = None) -> list[Entry]:
    """Every `[sources.ciklek]` key with its effective value and source."""
    try:
        settings: Settings | None = load_settings()
    except Exception:  # a bad value is still worth listing (the sync would say what is wrong)
        settings = None
    defaults = CiklekConfiguration()
    rows = []
    for key in CiklekConfiguration.get_resolvable_fields():
        found = _found(key, pipeline)
        if found is None:
            value = _effective(settings, key, getattr(defaults, key))
            rows.append(Entry(key, mask(key, value), "default", ""))
        else:
            raw, source, where = found
            scoped = "pipeline-scoped" in source  # `settings` holds the unscoped values
            value = raw if scoped else _effective(settings, key, raw)
            rows.append(Entry(key, mask(key, value), source, where))
    return rows


def render(rows: list[Entry]) -> str:
    width = max(len(r.key) for r in rows)
    lines = []
    for r in rows:
        where = f" [{r.where}]" if r.where else ""
        lines.append(f"{r.key:<{width}}  {r.value}  <- {r.source}{where}")
    return "\n".join(lines)
