"""The warehouse resource: dagster-duckdb's DuckDBResource, closing on error and ensuring the schema.

Every asset that writes the file declares `pool=WAREHOUSE_POOL`; dagster.yaml limits each pool to one op, so two
runs never hold the DuckDB write lock at once. Connections are opened per step and closed when it ends, so a
notebook can read between runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from kalshi_shadow.config import Settings
from kalshi_shadow.warehouse.connection import connect
from kalshi_shadow.warehouse.ddl import ensure_schema

WAREHOUSE_POOL = "duckdb"


class Warehouse(DuckDBResource):
    """DuckDB warehouse file plus the raw directory its loaders read."""

    raw_dir: str
    lock_timeout_seconds: float = 120.0

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = connect(self.database, timeout_seconds=self.lock_timeout_seconds)
        try:
            ensure_schema(conn)
            yield conn
        finally:
            conn.close()

    @property
    def raw_path(self) -> Path:
        return Path(self.raw_dir)


def warehouse_from_settings(settings: Settings | None = None) -> Warehouse:
    settings = settings or Settings.from_env()
    return Warehouse(database=str(settings.db_path), raw_dir=str(settings.raw_dir))


def resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    return {"warehouse": warehouse_from_settings(settings)}
