"""``python -m connector.sandbox``."""

from __future__ import annotations

from . import main

raise SystemExit(main())
