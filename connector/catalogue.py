"""The resources as data: endpoint, scope, keys and every documented field's type.

Why data and not code: the endpoint catalogue is a *named assumption* (Ciklek's per-endpoint
pages are not public, see docs/configuration.md, "API assumptions"). Keeping it here, in one
table, means adding an endpoint or correcting an assumption is an edit to this file or to
`.dlt/config.toml` (`[sources.ciklek.catalogue.<resource>]`, `money_fields`, `exclude_fields`)
and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from connector.errors import ConfigError

FieldKind = Literal["string", "int", "bool", "money", "timestamp", "date"]
KINDS: tuple[FieldKind, ...] = ("string", "int", "bool", "money", "timestamp", "date")


@dataclass(frozen=True)
class FieldSpec:
    """One documented field and the type it lands as."""

    name: str
    kind: FieldKind
    required: bool = False


@dataclass(frozen=True)
class ChildSpec:
    """A nested list that lands in its own table, replaced as a set when the parent changes."""

    source_field: str
    table: str
    parent_key: str
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class ResourceSpec:
    """One list endpoint and the table it fills."""

    name: str
    path: str
    scope: str
    fields: tuple[FieldSpec, ...]
    primary_key: str = "id"
    cursor_field: str = "updated_at"
    child: ChildSpec | None = None
    excluded: frozenset[str] = field(default_factory=frozenset)
    hashed: frozenset[str] = field(default_factory=frozenset)  # `<table>.<field>`, see hashing

    @property
    def tables(self) -> tuple[str, ...]:
        """Warehouse tables this resource fills (parent first)."""
        return (self.name, self.child.table) if self.child else (self.name,)


def _f(name: str, kind: FieldKind, required: bool = False) -> FieldSpec:
    return FieldSpec(name, kind, required)


LINE_ITEM_FIELDS = (
    _f("id", "string", required=True),
    _f("product_id", "string"),
    _f("sku", "string"),
    _f("quantity", "int"),
    _f("unit_price", "money"),
    _f("amount", "money"),
)

CATALOGUE: dict[str, ResourceSpec] = {
    "orders": ResourceSpec(
        name="orders",
        path="orders",
        scope="orders:read",
        fields=(
            _f("id", "string", required=True),
            _f("number", "string"),
            _f("customer_id", "string"),
            _f("status", "string"),
            _f("currency", "string"),
            _f("subtotal", "money"),
            _f("tax", "money"),
            _f("total", "money"),
            _f("delivery_date", "date"),
            _f("shipped_at", "timestamp"),
            _f("created_at", "timestamp"),
            _f("updated_at", "timestamp", required=True),
        ),
        child=ChildSpec(
            source_field="line_items",
            table="order_line_items",
            parent_key="order_id",
            fields=LINE_ITEM_FIELDS,
        ),
    ),
    "customers": ResourceSpec(
        name="customers",
        path="customers",
        scope="customers:read",
        fields=(
            _f("id", "string", required=True),
            _f("name", "string"),
            _f("email", "string"),
            _f("company", "string"),
            _f("credit_limit", "money"),
            _f("created_at", "timestamp"),
            _f("updated_at", "timestamp", required=True),
        ),
    ),
    "products": ResourceSpec(
        name="products",
        path="products",
        scope="products:read",
        fields=(
            _f("id", "string", required=True),
            _f("sku", "string"),
            _f("name", "string"),
            _f("price", "money"),
            _f("currency", "string"),
            _f("active", "bool"),
            _f("created_at", "timestamp"),
            _f("updated_at", "timestamp", required=True),
        ),
    ),
}

RESOURCE_NAMES: tuple[str, ...] = tuple(CATALOGUE)
REJECTS_TABLE = "_ciklek_rejects"
RUNS_TABLE = "_ciklek_sync_runs"
SCHEMA_CHANGES_TABLE = "_ciklek_schema_changes"
LEDGER_TABLE = "_ciklek_request_ledger"


def parse_name_list(value: object, setting: str) -> list[str]:
    """Accept a list, a JSON list string or a comma-separated string (env vars are strings)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                loaded = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{setting}: not a valid JSON list: {text!r}") from exc
            return parse_name_list(loaded, setting)
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, Iterable):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ConfigError(f"{setting}: expected a list or a comma-separated string, got {value!r}")


def _split_qualified(entry: str, setting: str) -> tuple[str, str]:
    table, sep, name = entry.partition(".")
    if not sep or not table or not name:
        raise ConfigError(
            f"{setting}: {entry!r} must look like <table>.<field>, e.g. customers.email"
        )
    return table, name


def _with_kind(fields: tuple[FieldSpec, ...], name: str, kind: FieldKind) -> tuple[FieldSpec, ...]:
    if any(f.name == name for f in fields):
        return tuple(replace(f, kind=kind) if f.name == name else f for f in fields)
    return (*fields, FieldSpec(name, kind))


def build_catalogue(
    overrides: Mapping[str, object] | None = None,
    money_fields: Iterable[str] = (),
    exclude_fields: Iterable[str] = (),
    hash_fields: Iterable[str] = (),
) -> dict[str, ResourceSpec]:
    """The default catalogue with the user's config applied.

    `overrides` is `[sources.ciklek.catalogue.<resource>]`: `path`, `scope`, and per-kind field
    lists (`money_fields`, `timestamp_fields`, `date_fields`, ...) that re-type or add fields.
    `money_fields` / `exclude_fields` are `<table>.<field>` lists (`orders.shipping_fee`).
    """
    cat = dict(CATALOGUE)
    for res_name, raw in (overrides or {}).items():
        if res_name not in cat:
            raise ConfigError(
                f"catalogue: unknown resource {res_name!r}; known: {', '.join(RESOURCE_NAMES)}"
            )
        if not isinstance(raw, Mapping):
            raise ConfigError(f"catalogue.{res_name}: expected a table of settings")
        spec = cat[res_name]
        for key, value in raw.items():
            if key in ("path", "scope", "cursor_field", "primary_key"):
                spec = replace(spec, **{key: str(value)})  # type: ignore[arg-type]
            elif key.endswith("_fields") and key[: -len("_fields")] in KINDS:
                kind = cast(FieldKind, key[: -len("_fields")])
                fields = spec.fields
                for name in parse_name_list(value, f"catalogue.{res_name}.{key}"):
                    fields = _with_kind(fields, name, kind)
                spec = replace(spec, fields=fields)
            else:
                raise ConfigError(f"catalogue.{res_name}: unknown setting {key!r}")
        # The incremental cursor must parse as an instant, whatever the overrides say.
        cat[res_name] = replace(
            spec, fields=_with_kind(spec.fields, spec.cursor_field, "timestamp")
        )

    by_table = {t: name for name, spec in cat.items() for t in spec.tables}
    for entry in money_fields:
        table, name = _split_qualified(entry, "money_fields")
        cat = _retype(cat, by_table, table, name, "money", "money_fields")
    excluded: dict[str, set[str]] = {}
    for entry in exclude_fields:
        table, name = _split_qualified(entry, "exclude_fields")
        if table not in by_table:
            raise ConfigError(f"exclude_fields: unknown table {table!r} in {entry!r}")
        spec = cat[by_table[table]]
        if name == spec.primary_key and table == spec.name:
            raise ConfigError(
                f"exclude_fields: {entry!r} is the primary key and cannot be excluded"
            )
        excluded.setdefault(by_table[table], set()).add(f"{table}.{name}")
    for res_name, names in excluded.items():
        cat[res_name] = replace(cat[res_name], excluded=frozenset(names))
    hashed: dict[str, set[str]] = {}
    for entry in hash_fields:
        table, name = _split_qualified(entry, "hash_fields")
        res_name = _hashable(cat, by_table, table, name, entry)
        hashed.setdefault(res_name, set()).add(f"{table}.{name}")
    for res_name, names in hashed.items():
        cat[res_name] = replace(cat[res_name], hashed=frozenset(names))
    return cat


def _hashable(
    cat: Mapping[str, ResourceSpec], by_table: Mapping[str, str], table: str, name: str, entry: str
) -> str:
    """The resource of a `hash_fields` entry, or ConfigError: only a text field that is no key,
    no cursor and not excluded can be replaced by its hash."""
    if table not in by_table:
        raise ConfigError(f"hash_fields: unknown table {table!r} in {entry!r}")
    spec = cat[by_table[table]]
    if table == spec.name and name in (spec.primary_key, spec.cursor_field):
        raise ConfigError(f"hash_fields: {entry!r} is a key or the cursor and cannot be hashed")
    if (
        spec.child is not None
        and table == spec.child.table
        and name in ("id", spec.child.parent_key)
    ):
        raise ConfigError(f"hash_fields: {entry!r} is a key and cannot be hashed")
    if entry in spec.excluded:
        raise ConfigError(f"hash_fields: {entry!r} is also in exclude_fields; choose one")
    fields = (
        spec.child.fields if spec.child is not None and table == spec.child.table else spec.fields
    )
    kind = next((f.kind for f in fields if f.name == name), "string")
    if kind != "string":
        raise ConfigError(
            f"hash_fields: {entry!r} is a {kind} field; only text fields can be hashed (a hash "
            "is text)"
        )
    return spec.name


def _retype(
    cat: dict[str, ResourceSpec],
    by_table: Mapping[str, str],
    table: str,
    name: str,
    kind: FieldKind,
    setting: str,
) -> dict[str, ResourceSpec]:
    if table not in by_table:
        raise ConfigError(f"{setting}: unknown table {table!r}; known: {', '.join(by_table)}")
    res_name = by_table[table]
    spec = cat[res_name]
    if spec.child and table == spec.child.table:
        child = replace(spec.child, fields=_with_kind(spec.child.fields, name, kind))
        spec = replace(spec, child=child)
    else:
        spec = replace(spec, fields=_with_kind(spec.fields, name, kind))
    return {**cat, res_name: spec}
