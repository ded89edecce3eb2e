"""The warehouse schema: the `sql/NNN_*.sql` files, applied in name order, each idempotent.

One file per domain (raw loads, contracts, edges, scores) so each concept has one obvious home.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).with_name("sql")


@cache
def schema_sql() -> tuple[str, ...]:
    return tuple(p.read_text() for p in sorted(SQL_DIR.glob("*.sql")))


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for sql in schema_sql():
        conn.execute(sql)
