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


# Views that a table of the same name replaced: dropped first, so a warehouse made before the change still opens.
RETIRED_VIEWS = ("kalshi_would_trades",)  # a view over snapshots until the decision log (issue 9)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for (name,) in conn.execute("SELECT view_name FROM duckdb_views() WHERE view_name IN (SELECT unnest(?::VARCHAR[]))",
                                [list(RETIRED_VIEWS)]).fetchall():
        conn.execute(f"DROP VIEW {name}")
    for sql in schema_sql():
        conn.execute(sql)
