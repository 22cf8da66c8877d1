"""Several Ciklek accounts: a pipeline name is an account, with its own key, state and ledger.

Why dlt's pipeline-scoped config: `[acme.sources.ciklek] api_key` (or
`ACME__SOURCES__CIKLEK__API_KEY`) is how dlt users already scope a setting to one pipeline, and
dlt resolves it only inside a `ConfigSectionContext(pipeline_name=...)`; without that context the
scoped key is silently ignored and every account would sync with the unscoped key. For a name
listed in `accounts` the scoped key is required: falling back to the unscoped key would load one
account's data under another's name.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import dlt
from dlt.common.configuration.inject import inject_section
from dlt.common.configuration.specs.config_section_context import ConfigSectionContext

from connector.catalogue import parse_name_list
from connector.errors import ConfigError

SECTIONS = ("sources", "ciklek")
# An account name becomes a Dagster partition, a pipeline name and part of a dataset name.
ACCOUNT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@contextlib.contextmanager
def pipeline_scope(pipeline: str | None) -> Iterator[None]:
    """Resolve settings as dlt does for `pipeline`: scoped values first, then unscoped ones."""
    if not pipeline:
        yield
        return
    with inject_section(ConfigSectionContext(pipeline_name=pipeline, sections=SECTIONS)):
        yield


def scoped_key_name(account: str) -> str:
    return f"{account.upper()}__SOURCES__CIKLEK__API_KEY"


def has_scoped_key(account: str) -> bool:
    """Is `[<account>.sources.ciklek] api_key` set (env or secrets.toml), not a fallback?"""
    try:
        value: object = dlt.secrets.get(f"{account}.sources.ciklek.api_key")
    except Exception:  # a provider problem: treat as missing, the error below says what to set
        return False
    return bool(str(value or "").strip())


def missing_scoped_key(account: str) -> str | None:
    """The problem when `account` has no key of its own (None when it has one)."""
    if has_scoped_key(account):
        return None
    return (
        f"account {account!r} has no API key of its own: set {scoped_key_name(account)} or "
        f"api_key under [{account}.sources.ciklek] in .dlt/secrets.toml (an account never "
        "uses the unscoped key)"
    )


def require_scoped_key(account: str) -> None:
    """An account never falls back to the unscoped key (that is another account's key)."""
    problem = missing_scoped_key(account)
    if problem is not None:
        raise ConfigError(problem)


def account_dataset(account: str) -> str:
    """The default dataset of one account: its tables never mix with another's."""
    return f"ciklek_{account}"


def configured_accounts() -> tuple[str, ...]:
    """`accounts` as set, read without the rest of the settings (a Dagster code location loads
    before any key exists); the full validation runs again when a partition materialises."""
    raw: object = dlt.config.get("sources.ciklek.accounts")
    names = parse_name_list(raw, "accounts")
    bad = [a for a in names if not ACCOUNT_NAME.match(a)]
    if bad:
        raise ConfigError(f"accounts: {', '.join(map(repr, bad))} must match [a-z][a-z0-9_]*")
    return tuple(dict.fromkeys(names))
