"""Hashed fields: a value replaced by its keyed hash (HMAC-SHA256, hex) the moment a page is taken.

Why keyed: a plain hash of an e-mail address is no secret (hash every address you can guess and
compare); an HMAC with a key only the connector's secrets hold cannot be tested by a reader of
the warehouse, yet the same value gives the same hash in every table and run, so joins keep
working. Why the moment a page is taken: nothing downstream (the Arrow tables, `_ciklek_rejects`
and its `raw_json`, dlt's load packages, a reject's reason) ever sees the clear value, so nothing
can write it.

What is hashed: a string's UTF-8 bytes as they came (no case folding: exactness first); any
other JSON value's compact JSON text; null stays null ("has no e-mail" stays visible). A field is
matched by its name or by the column its name lands in (`Email` lands in `email`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable

from connector.catalogue import ResourceSpec
from connector.records.undocumented import column_name


def keyed_hash(key: bytes, value: object) -> str | None:
    """HMAC-SHA256 of the value (hex); None for null."""
    if value is None:
        return None
    data = (
        value.encode()
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    )
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _names(spec_entries: Iterable[str], table: str) -> frozenset[str]:
    prefix = table + "."
    return frozenset(e[len(prefix) :] for e in spec_entries if e.startswith(prefix))


class FieldHasher:
    """Replaces one resource's hashed fields (its own and its line items') in place."""

    def __init__(self, spec: ResourceSpec, key: bytes) -> None:
        self.key = key
        self.own = _names(spec.hashed, spec.name)
        child = spec.child
        self.items_field = child.source_field if child is not None else None
        self.item_fields = _names(spec.hashed, child.table) if child is not None else frozenset()

    @classmethod
    def for_spec(cls, spec: ResourceSpec, key: bytes | None) -> FieldHasher | None:
        """None when the resource hashes nothing (the hot path stays as it was)."""
        if not spec.hashed or key is None:
            return None
        return cls(spec, key)

    def apply(self, record: object) -> None:
        """Hash the record's fields (and its line items') in place."""
        if not isinstance(record, dict):
            return
        if self.own:
            self._hash(record, self.own)
        items = record.get(self.items_field) if self.items_field and self.item_fields else None
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    self._hash(item, self.item_fields)

    def _hash(self, record: dict[str, object], fields: frozenset[str]) -> None:
        for name in [k for k in record if k in fields or column_name(k) in fields]:
            record[name] = keyed_hash(self.key, record[name])
