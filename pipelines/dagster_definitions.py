"""Dagster: the Ciklek tables as assets, materialised by `run_sync` (the engine of `ciklek sync`).

    dagster dev -f pipelines/dagster_definitions.py
    dagster asset materialize -f pipelines/dagster_definitions.py --select '*'
    dagster definitions validate -f pipelines/dagster_definitions.py

`defs` holds the assets `ciklek/orders`, `ciklek/order_line_items`, `ciklek/customers`,
`ciklek/products` (upstream: `ciklek_api`), their checks, the sweep job, and an hourly sync and a
weekly sweep schedule, stopped until started (in the UI, or `make_definitions(run_schedules=
True)` below). The code lives in `pipelines/ciklek_dagster/`; docs/scheduling.md ("Dagster")
says what an operator sees and why.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _package(name: str = "ciklek_dagster") -> ModuleType:
    """The package beside this file, loaded once by path (Dagster loads this file with `-f`, so
    its directory is not on `sys.path`)."""
    if name in sys.modules:
        return sys.modules[name]
    init = Path(__file__).with_name(name) / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_package()

from ciklek_dagster.definitions import make_assets, make_definitions, make_sweep_job  # noqa: E402
from ciklek_dagster.tables import CiklekTranslator  # noqa: E402

__all__ = ["CiklekTranslator", "defs", "make_assets", "make_definitions", "make_sweep_job"]

defs = make_definitions()
