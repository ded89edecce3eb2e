"""Exactly-once loading of raw Parquet batches into the warehouse.

A file's rows and its `raw_file_loads` ledger row are inserted in one transaction, so a crash in between neither
double-loads nor loses it. Only date folders from the newest loaded day on are listed, so a run's cost follows
the new files, not weeks of history. A file that cannot be read is recorded in `raw_file_failures` and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from kalshi_shadow.raw import RAW_SCHEMAS
from kalshi_shadow.raw.store import list_raw_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    table: str
    files: int
    rows: int
    min_ts: datetime | None
    max_ts: datetime | None
    failed_files: list[str]


def _candidate_files(conn: duckdb.DuckDBPyConnection, raw_dir: Path, table: str) -> list[tuple[str, Path]]:
    newest = conn.execute(
        "SELECT max(file_name) FROM raw_file_loads WHERE table_name = ?", [table]
    ).fetchone()[0]
    from_day = newest.split("/")[1] if newest else ""  # 'date=YYYY-MM-DD'
    files = [(str(p.relative_to(raw_dir)), p) for p in list_raw_files(raw_dir, table) if p.parent.name >= from_day]
    if not files:
        return []
    # Names already loaded (or known broken) at or after the oldest candidate, so the lookup stays small.
    done = {
        r[0]
        for r in conn.execute(
            "SELECT file_name FROM raw_file_loads WHERE table_name = ? AND file_name >= ? "
            "UNION ALL SELECT file_name FROM raw_file_failures WHERE table_name = ?",
            [table, files[0][0], table],
        ).fetchall()
    }
    return [(rel, p) for rel, p in files if rel not in done]


def _readable(conn: duckdb.DuckDBPyConnection, files: list[tuple[str, Path]]) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Split into readable files and (name, error) for broken ones; only called after a batch read failed."""
    good, bad = [], []
    for rel, p in files:
        try:
            conn.execute("SELECT count(*) FROM read_parquet(?)", [str(p)]).fetchone()
            good.append((rel, p))
        except duckdb.Error as exc:
            bad.append((rel, str(exc)[:500]))
    return good, bad


def load_new_files(conn: duckdb.DuckDBPyConnection, raw_dir: Path | str, table: str, *, max_files: int = 5000) -> LoadResult:
    raw_dir = Path(raw_dir)
    cols = list(RAW_SCHEMAS[table])
    files = _candidate_files(conn, raw_dir, table)[:max_files]
    failed: list[str] = []
    if not files:
        return LoadResult(table, 0, 0, None, None, [])
    paths = [str(p) for _, p in files]
    try:
        conn.execute("SELECT count(*) FROM read_parquet(?, union_by_name = true)", [paths]).fetchone()
    except duckdb.Error:
        files, bad = _readable(conn, files)
        for name, err in bad:
            log.error("raw file %s/%s cannot be read: %s", table, name, err)
            conn.execute(
                "INSERT INTO raw_file_failures VALUES (?, ?, ?, now()) ON CONFLICT DO NOTHING", [table, name, err]
            )
            failed.append(name)
        paths = [str(p) for _, p in files]
        if not files:
            return LoadResult(table, 0, 0, None, None, failed)

    select_cols = ", ".join(f"r.{c}" for c in cols)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("CREATE OR REPLACE TEMP TABLE _new_files (file_name VARCHAR, path VARCHAR, load_id BIGINT)")
        conn.executemany("INSERT INTO _new_files VALUES (?, ?, nextval('raw_file_load_ids'))", [[rel, str(p)] for rel, p in files])
        conn.execute(
            f"""
            INSERT INTO {table} ({", ".join(cols)}, load_id)
            SELECT {select_cols}, f.load_id
            FROM read_parquet(?, union_by_name = true, filename = true) AS r
            JOIN _new_files AS f ON r.filename = f.path
            """,
            [paths],
        )
        conn.execute(
            f"""
            INSERT INTO raw_file_loads (load_id, table_name, file_name, row_count, loaded_at)
            SELECT f.load_id, ?, f.file_name, count(t.load_id), now()
            FROM _new_files AS f LEFT JOIN {table} AS t ON t.load_id = f.load_id
            GROUP BY f.load_id, f.file_name
            """,
            [table],
        )
        rows, min_ts, max_ts = conn.execute(
            f"SELECT count(*), min(ts), max(ts) FROM {table} WHERE load_id IN (SELECT load_id FROM _new_files)"
        ).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("DROP TABLE IF EXISTS _new_files")
    log.info("loaded %d rows from %d %s files", rows, len(files), table)
    return LoadResult(table, len(files), rows, min_ts, max_ts, failed)
