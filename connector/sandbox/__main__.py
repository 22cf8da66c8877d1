"""``python -m connector.sandbox``."""

from __future__ import annotations

import sys

from . import missing_extra

if (problem := missing_extra()) is not None:
    print(f"ciklek sandbox: {problem}", file=sys.stderr)
    raise SystemExit(2)

# imported only once the server packages are known to exist
from .server import main

raise SystemExit(main())
