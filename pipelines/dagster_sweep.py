"""Dagster: `ciklek sweep` as a job beside the sync assets (see dagster_definitions.py).

`make_sweep_job()` builds the job `defs` already holds (the assets' pipeline, dataset, pool and
partitions); use it to build one of your own, e.g. for some resources only:
`make_sweep_job(resources=["customers"])`. What its outcomes mean:
pipelines/ciklek_dagster/sweep.py and docs/scheduling.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "ciklek_dagster_definitions", Path(__file__).with_name("dagster_definitions.py")
)
assert _spec is not None and _spec.loader is not None
_definitions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_definitions)

make_sweep_job = _definitions.make_sweep_job

__all__ = ["make_sweep_job"]
