"""Read the warehouse from a notebook or a terminal without holding up the pipeline.

DuckDB lets only one process hold the file, and a read-only connection counts: a notebook that keeps a connection
open blocks every Dagster run that writes (writers retry for up to 2 minutes, then fail). So a `Reader` keeps nothing
open. Each query opens the file read-only, fetches the whole result into memory, and closes the file at once, so a
writer waits at most for one query. For a long analysis, copy the data out (`wh.sql(...)` returns an in-memory polars
frame) and work on the frame; do not hold a connection. Likewise, a loop that fires queries back to back leaves
writers only the gaps between them (their retries can miss those): fetch what you need in one query, or pause between.

    import kalshi_shadow
    wh = kalshi_shadow.connect()
    wh.sql("SELECT series_ticker, count(*) AS n FROM kalshi_edge_snapshots GROUP BY ALL")

`kalshi-shadow sql "<query>"` does the same from a terminal (`main` below).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import duckdb
import polars as pl

from kalshi_shadow.warehouse.connection import WarehouseLockedError, connect as _open


class Reader:
    """A handle on the warehouse that opens the file only while one of its queries runs (see the module docstring)."""

    def __init__(self, db_path: Path | str, *, timeout_seconds: float = 60.0) -> None:
        # Resolved now, so a notebook that changes directory later still reads the same file.
        self.path = Path(db_path).expanduser().resolve()
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"Reader({str(self.path)!r}, opened read-only per query)"

    def __enter__(self) -> "Reader":
        # Nothing to open or close: kept so that `with kalshi_shadow.connect() as wh:` reads like duckdb's.
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The file, read-only and in UTC, for one query; retries while a writer holds it and always closes it."""
        if not self.path.exists():
            raise FileNotFoundError(f"no warehouse at {self.path}: the pipeline has not created it yet, or set DB_PATH")
        conn = _open(self.path, read_only=True, timeout_seconds=self.timeout_seconds)
        try:
            yield conn
        finally:
            conn.close()

    def sql(self, query: str, params: Any = None) -> pl.DataFrame:
        """Run one query and return every row as a polars frame (fetched through Arrow before the file is closed)."""
        with self._connection() as conn:
            relation = conn.sql(query, params=params)
            # A statement with no result (e.g. SET) gives no relation.
            return pl.DataFrame() if relation is None else relation.pl()

    def df(self, query: str, params: Any = None) -> Any:
        """Run one query and return a pandas DataFrame; pandas is not a dependency, so this needs it installed."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError(
                "Reader.df needs pandas, which kalshi-shadow does not install: `pip install pandas`, "
                "or use Reader.sql, which returns a polars frame"
            ) from None
        with self._connection() as conn:
            relation = conn.sql(query, params=params)
            return pandas.DataFrame() if relation is None else relation.df()

    def tables(self) -> pl.DataFrame:
        """Every table and view with its kind, and the row count of each table (views are not run), in one opening."""
        with self._connection() as conn:
            listing = conn.execute(
                "SELECT table_schema, table_name, table_type FROM information_schema.tables "
                "WHERE table_catalog = current_database() ORDER BY table_schema, table_name"
            ).fetchall()
            rows: list[dict[str, Any]] = []
            for schema, name, table_type in listing:
                is_table = table_type == "BASE TABLE"
                count = conn.execute(f"SELECT count(*) FROM {_quote(schema)}.{_quote(name)}").fetchone()[0] if is_table else None
                rows.append({"name": name if schema == "main" else f"{schema}.{name}", "kind": "table" if is_table else "view", "rows": count})
        return pl.DataFrame(rows, schema={"name": pl.String, "kind": pl.String, "rows": pl.Int64})


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def connect(db_path: Path | str | None = None, *, timeout_seconds: float = 60.0) -> Reader:
    """A `Reader` on the warehouse (`DB_PATH`, else `data/warehouse.duckdb`); opens nothing until a query runs.

    `timeout_seconds` bounds how long each query waits for a writer to release the file before
    `WarehouseLockedError`.
    """
    if db_path is None:
        from kalshi_shadow.config import Settings

        db_path = Settings.from_env().db_path
    return Reader(db_path, timeout_seconds=timeout_seconds)


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no nested values: lists and structs (e.g. `reasons`) become JSON text."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    return frame.with_columns(
        pl.Series(name, [None if v is None else json.dumps(v, default=str) for v in frame[name].to_list()], dtype=pl.String)
        for name in nested
    )


def main(argv: list[str]) -> int:
    """`kalshi-shadow sql "<query>"`: one read-only query, printed, with the file held only while it runs."""
    ap = argparse.ArgumentParser(
        prog="kalshi-shadow sql",
        description="Run one read-only query against the warehouse and print the result. The file is opened for the "
        "query only, so the pipeline is never held up longer than the query.",
    )
    ap.add_argument("query", help="SQL to run (DuckDB dialect), e.g. \"SELECT * FROM kalshi_edges\"")
    ap.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default table)")
    ap.add_argument("--limit", type=int, default=50, help="rows printed in table format (default 50; negative = all); "
                    "the total row count is printed below")
    ap.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait while a writer holds the file")
    args = ap.parse_args(argv)
    try:
        frame = connect(timeout_seconds=args.lock_timeout).sql(args.query)
    except (WarehouseLockedError, FileNotFoundError, duckdb.Error, ValueError) as exc:
        # ValueError covers a malformed setting (ConfigError) as well as bad parameters.
        print(f"kalshi-shadow sql: {exc}", file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(_csv_ready(frame).write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_json() + "\n")
    else:
        shown = frame if args.limit < 0 else frame.head(args.limit)
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=80, tbl_hide_dataframe_shape=True):
            print(shown)
        total = frame.height
        more = f" ({shown.height} shown; --limit to see more)" if shown.height < total else ""
        print(f"{total} row{'' if total == 1 else 's'}{more}")
    return 0
