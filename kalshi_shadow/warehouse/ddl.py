"""The warehouse schema as numbered migrations: `sql/NNN_<what>.sql` (or `.py`, for a change that moves rows in
bounded steps), applied once each, in number order, and recorded in `schema_migrations`.

Why migrations: users keep one warehouse for months, and a release that changes a table must upgrade the file they
have, in place, without losing a row; creating only what is missing (the old way) broke inserts as soon as a
release added a column. A fresh warehouse and an upgraded one pass through the same steps, so they end up with the
same schema (a test upgrades a warehouse made by an older release and compares).

Migrations 001-005 are the baseline (the schema as of commit 0cbdf6e): written `IF NOT EXISTS`, so a warehouse made
before migrations were recorded simply records them. Each later file is applied in one transaction with its record:
a failure leaves the warehouse at the previous version, never half-migrated. Applying is cheap when there is
nothing to do (one query), so every writer connection checks; `kalshi-shadow up` migrates before Dagster starts,
so a long one (a table rebuilt) runs once, visibly, and not inside a live run.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb

from kalshi_shadow.warehouse.connection import transaction

log = logging.getLogger(__name__)
SQL_DIR = Path(__file__).with_name("sql")
BASELINE = 5  # 001-005: the schema before migrations were recorded (idempotent, see the module docstring)

# Views that a table of the same name replaced: dropped first, so a warehouse made before the change still opens.
RETIRED_VIEWS = ("kalshi_would_trades",)  # a view over snapshots until the decision log (issue 9)

RECORD_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,   -- the NNN of sql/NNN_<name>.sql
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL,
    seconds    DOUBLE NOT NULL        -- how long it took (a table rebuild on months of data takes a while)
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def apply(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A .sql file runs as one script; a .py file's `migrate(conn)` runs, for a change too big for one statement
        (it moves rows in bounded steps). Either way inside the caller's transaction."""
        if self.path.suffix == ".sql":
            conn.execute(self.path.read_text())
            return
        spec = importlib.util.spec_from_file_location(f"kalshi_shadow_migration_{self.version:03d}", self.path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.migrate(conn)


@cache
def migrations() -> tuple[Migration, ...]:
    out = []
    for p in sorted([*SQL_DIR.glob("*.sql"), *SQL_DIR.glob("*.py")]):
        m = re.fullmatch(r"(\d{3})_(\w+)\.(sql|py)", p.name)
        if not m:
            raise RuntimeError(f"{p}: migration files are named NNN_<name>.sql or NNN_<name>.py")
        out.append(Migration(int(m.group(1)), m.group(2), p))
    versions = [m.version for m in out]
    if versions != list(range(1, len(out) + 1)):
        raise RuntimeError(f"migrations in {SQL_DIR} must be numbered 1..n without gaps, got {versions}")
    return tuple(out)


def latest_version() -> int:
    return migrations()[-1].version


def current_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The newest migration applied to this warehouse (0: none recorded, e.g. a new file or one made before 005)."""
    has = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_migrations' "
                       "AND schema_name = 'main'").fetchall()[0][0]
    if not has:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]


def pending(conn: duckdb.DuckDBPyConnection) -> list[Migration]:
    done = current_version(conn)
    return [m for m in migrations() if m.version > done]


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> list[Migration]:
    """Apply every migration this warehouse lacks, each in a transaction with its record; returns those applied."""
    todo = pending(conn)
    if not todo:
        return []
    conn.execute(RECORD_SQL)
    if todo[0].version <= BASELINE:
        for (name,) in conn.execute("SELECT view_name FROM duckdb_views() WHERE view_name IN (SELECT unnest(?::VARCHAR[]))",
                                    [list(RETIRED_VIEWS)]).fetchall():
            conn.execute(f"DROP VIEW {name}")
    for m in todo:
        started = time.monotonic()
        with transaction(conn):
            m.apply(conn)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, now(), ?)", [m.version, m.name, time.monotonic() - started])
        if m.version > BASELINE:
            log.info("warehouse migrated to %03d_%s in %.1f s", m.version, m.name, time.monotonic() - started)
    # Fold the migrations into the file: a WAL holding an ALTER of a table with generated columns can only be
    # replayed by a DuckDB that may load its built-in extensions (a plain `duckdb.connect` offline cannot).
    conn.execute("CHECKPOINT")
    return todo
