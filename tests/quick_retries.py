"""Short retry back-offs for tests whose point is what a retry does, not how long it waits.

`short_backoff(monkeypatch)` makes every `CiklekClient` built afterwards (in-process `ciklek`
runs included: tests/inproc.py) back off 20 ms doubling, without jitter, instead of 0.5 s
doubling plus up to 0.25 s. The retries, their count and their order are unchanged; a wait for a
429's `X-RateLimit-Reset` stays the server's to decide. tests/unit/test_client.py pins the real
schedule.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from connector.api.client import CiklekClient

BACKOFF_BASE = 0.02


def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    init = CiklekClient.__init__

    @functools.wraps(init)
    def quick(self: CiklekClient, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backoff_base", BACKOFF_BASE)
        kwargs.setdefault("jitter", lambda: 0.0)
        init(self, *args, **kwargs)

    monkeypatch.setattr(CiklekClient, "__init__", quick)
