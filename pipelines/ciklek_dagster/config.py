"""What the Dagster definitions are built with (`CiklekConfig`) and where one run goes (`Target`).

Why apart from the settings: `[sources.ciklek]` settings and the key are read when an asset
materialises, never when the code location loads; these are the factory's own arguments (which
pipeline, dataset and destination, how to retry), fixed when the definitions are built.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.config.accounts import account_dataset

PIPELINE_NAME = "ciklek_dagster"
DATASET = "ciklek"
RETRY_SECONDS = 60.0  # API unavailable, lock held, warehouse locked: worth a retry this soon


@dataclass(frozen=True)
class CiklekConfig:
    """The factory's arguments (what is not a `[sources.ciklek]` setting)."""

    pipeline: str = PIPELINE_NAME
    dataset: str | None = None  # default: ciklek, or ciklek_<account>
    destination: str | None = None  # a dlt destination name; default duckdb
    duckdb_file: str | None = None
    strict: bool = False
    retry_cap_seconds: float = 600.0  # a stop that clears later materialises what was loaded
    max_retries: int = 10
    retry_seconds: float = RETRY_SECONDS

    @property
    def pool(self) -> str:
        """The Dagster pool of every op that runs this pipeline (assets and sweep alike)."""
        return f"ciklek_{self.pipeline}"

    def target(self, account: str | None) -> Target:
        """Where a run goes: the account's own pipeline and dataset when partitioned."""
        dataset = self.dataset or (account_dataset(account) if account else DATASET)
        return Target(
            pipeline=account or self.pipeline,
            dataset=dataset,
            destination=self.destination,
            duckdb_file=self.duckdb_file,
            account=account,
        )


@dataclass(frozen=True)
class Target:
    """One run's pipeline (the account when partitioned), dataset and destination."""

    pipeline: str
    dataset: str
    destination: str | None
    duckdb_file: str | None
    account: str | None

    @property
    def destination_name(self) -> str:
        return (self.destination or "duckdb").strip()

    def table_name(self, table: str) -> str:
        """`destination.dataset.table`, as dagster-dlt names a table (`dagster/table_name`)."""
        return f"{self.destination_name}.{self.dataset}.{table}"
