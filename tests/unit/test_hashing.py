"""Hashed fields: the keyed hash itself, where it applies in a record, and what settings refuse."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from connector.catalogue import build_catalogue
from connector.cli.config_report import entries
from connector.config.redaction import scrub
from connector.config.settings import load_settings
from connector.errors import ConfigError
from connector.records.hashing import FieldHasher, keyed_hash

KEY = b"k3y-for-tests"


def expected(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


def test_the_hash_is_hmac_sha256_of_the_value_and_null_stays_null() -> None:
    assert keyed_hash(KEY, "ann@example.com") == expected("ann@example.com")
    assert keyed_hash(KEY, "ann@example.com") != keyed_hash(b"other-key", "ann@example.com")
    assert keyed_hash(KEY, "Ann@example.com") != keyed_hash(KEY, "ann@example.com")  # exact
    assert keyed_hash(KEY, None) is None
    assert keyed_hash(KEY, 42) == expected("42")  # non-strings: their compact JSON text
    assert keyed_hash(KEY, {"b": 1, "a": [2]}) == expected('{"a":[2],"b":1}')


def test_a_record_and_its_line_items_are_hashed_in_place_by_field_and_column_name() -> None:
    cat = build_catalogue(hash_fields=["customers.email", "customers.tier", "order_line_items.sku"])
    customer = {"id": "c1", "email": "ann@example.com", "name": "Ann", "Tier": "gold"}
    hasher = FieldHasher.for_spec(cat["customers"], KEY)
    assert hasher is not None
    hasher.apply(customer)
    assert customer == {
        "id": "c1",
        "email": expected("ann@example.com"),
        "name": "Ann",  # not listed: as it came
        "Tier": expected("gold"),  # an undocumented field, matched by the column it lands in
    }
    order = {"id": "o1", "line_items": [{"id": "i1", "sku": "SKU-1"}, {"id": "i2", "sku": None}]}
    order_hasher = FieldHasher.for_spec(cat["orders"], KEY)
    assert order_hasher is not None
    order_hasher.apply(order)
    assert order["line_items"] == [
        {"id": "i1", "sku": expected("SKU-1")},
        {"id": "i2", "sku": None},
    ]
    assert FieldHasher.for_spec(cat["products"], KEY) is None  # nothing hashed: no work


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("customers.id", "a key or the cursor"),
        ("customers.updated_at", "a key or the cursor"),
        ("order_line_items.order_id", "is a key"),
        ("customers.credit_limit", "only text fields"),
        ("nowhere.email", "unknown table"),
        ("email", "must look like <table>.<field>"),
    ],
)
def test_fields_that_cannot_be_hashed_are_refused(entry: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        build_catalogue(hash_fields=[entry])


def test_a_field_both_excluded_and_hashed_is_refused() -> None:
    with pytest.raises(ConfigError, match="also in exclude_fields"):
        build_catalogue(exclude_fields=["customers.email"], hash_fields=["customers.email"])


def test_hashed_fields_need_the_key_which_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__CIKLEK__HASH_FIELDS", "customers.email,customers.name")
    settings = load_settings()
    assert settings.catalogue["customers"].hashed == {"customers.email", "customers.name"}
    with pytest.raises(ConfigError, match="no hash_key"):
        settings.require_hash_key()
    monkeypatch.setenv("SOURCES__CIKLEK__HASH_KEY", "s3cret-hash-key-value")
    key = load_settings().require_hash_key()
    assert key is not None and key.reveal() == "s3cret-hash-key-value"
    assert "s3cret" not in repr(key) and scrub("x s3cret-hash-key-value y") == "x *** y"
    shown = {e.key: e.value for e in entries()}
    assert shown["hash_key"].startswith("*** (set") and "s3cret" not in shown["hash_key"]
    assert shown["hash_fields"] == "customers.email,customers.name"


def test_without_hash_fields_no_key_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().require_hash_key() is None
