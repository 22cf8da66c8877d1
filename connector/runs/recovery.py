"""Crash recovery: the load packages a killed run left behind, dealt with before the first chunk.

Why not just let dlt load them: a killed run's last chunk may be half loaded, and loading it
again could stage rows twice (dlt's load jobs are at-least-once, and `order_line_items` has no
primary key to deduplicate them). Aborting it instead rewinds the state to before that chunk, so
the chunk is fetched again: at most `checkpoint_pages` requests, never a duplicate row.

The one private dlt call of the connector lives here (`_extracted_packages`): dlt offers no
public accessor to the extracted-package storage. It was checked against dlt 1.31 (pyproject pins
`dlt>=1.31,<1.32`), and tests/unit/test_recovery.py fails loudly if dlt renames it.
"""

from __future__ import annotations

import dlt
from dlt.common.storages.load_package import PackageStorage

TESTED_DLT = "1.31"


def recover(pipeline: dlt.Pipeline) -> None:
    """Deal with the packages a killed run left behind, before the first chunk."""
    if not pipeline.has_pending_data:
        return
    # Killed between dlt's "do not kill" rename and its delete: the package is normalized
    # and still extracted, and normalizing it again fails on every run. Finish the delete.
    extracted = extracted_packages(pipeline)
    for load_id in set(pipeline.list_extracted_load_packages()).intersection(
        pipeline.list_normalized_load_packages()
    ):
        extracted.delete_package(load_id)
    # A killed run's last chunk: abort it (see the module docstring), except the first chunk of
    # a --full-refresh: its tables may be emptied already, and rewinding would leave them so;
    # finish it and the next run continues the reload.
    if refresh_pending(pipeline):
        pipeline.run()
    else:
        pipeline.abort_packages()


def extracted_packages(pipeline: dlt.Pipeline) -> PackageStorage:
    """dlt's extracted-package storage, through its one private accessor (dlt 1.31)."""
    try:
        return pipeline._get_normalize_storage().extracted_packages
    except AttributeError as exc:  # pragma: no cover - only on an untested dlt version
        raise RuntimeError(
            f"dlt {dlt.__version__} changed its package storage; this connector is tested with "
            f"dlt {TESTED_DLT}: reinstall with pip install -e . to get the pinned version"
        ) from exc


def refresh_pending(pipeline: dlt.Pipeline) -> bool:
    """Does a pending package (extracted or normalized) drop tables, i.e. start a refresh?"""
    states = [pipeline.get_load_package_state(i) for i in pipeline.list_normalized_load_packages()]
    extracted = extracted_packages(pipeline)
    states += [extracted.get_load_package_state(i) for i in pipeline.list_extracted_load_packages()]
    return any(state.get("dropped_tables") for state in states)
