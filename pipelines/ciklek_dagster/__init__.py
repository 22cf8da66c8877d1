"""Dagster definitions for the Ciklek connector (`pipelines/dagster_definitions.py` loads this
package by path: Dagster loads that file with `-f`, not as part of a package).

| module | what it is |
|---|---|
| `definitions.py` | `make_definitions()`: assets, the API asset, sweep job, schedules |
| `assets.py` | the multi-asset: a sync, or checks only; materialisations and checks |
| `checks.py` | `sync_complete`, `no_rejects`, `reconciled`: specs and evaluation |
| `sweep.py` | the sweep job and its observations |
| `schedules.py` | the hourly sync and weekly sweep schedules (stopped by default) |
| `runner.py` | one `run_sync` for an op, its lines into Dagster's log |
| `outcome.py` | a run's outcome as a result, a retry that says why, or a failure |
| `facts.py` | the run's figures once per run; the summary line |
| `warehouse.py` | what the warehouse says: counts, rejects, the run log, the columns |
| `tables.py` | the asset specs, descriptions, the translator |
| `docs_tables.py` | docs/tables.md read: keys, origins, every column's type and meaning |
| `config.py` | the factory's arguments and a run's target |
"""
