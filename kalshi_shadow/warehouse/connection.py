"""Opening the warehouse file while honouring DuckDB's one-process lock.

Only one process may hold the file (even a read-only notebook blocks writers). Every opener here retries a
conflicting lock with backoff for a bounded time, then fails with a message saying who to close.
Keep connections short: open, write in one transaction, close.

Every connection runs in UTC: DuckDB casts TIMESTAMPTZ to DATE (and truncates to days and hours) in the session's
time zone, which otherwise follows the host's. Day keys must be UTC days wherever the machine is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Iterator

import duckdb

log = logging.getLogger(__name__)


class WarehouseLockedError(RuntimeError):
    """Another process held the DuckDB file for longer than we were willing to wait."""


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def utc(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Pin the session time zone to UTC (see the module docstring) and bound DuckDB's memory, which spills to disk
    past `KALSHI_SHADOW_DUCKDB_MEMORY_LIMIT` (default 1GB) instead of growing with the size of a day."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET preserve_insertion_order = false")  # lets large inserts stream instead of buffering in order
    conn.execute(f"SET memory_limit = '{os.environ.get('KALSHI_SHADOW_DUCKDB_MEMORY_LIMIT', '1GB')}'")
    return conn


def connect(db_path: Path | str, *, read_only: bool = False, timeout_seconds: float = 60.0) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying while another process holds the lock."""
    db_path = Path(db_path)
    if not read_only:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_seconds
    delay = 0.05
    while True:
        try:
            # Never download an extension: DuckDB's built-in functions are statically linked, and replaying a WAL
            # that altered a table with generated columns would otherwise try to "install" them (and fail offline).
            return utc(duckdb.connect(str(db_path), read_only=read_only, config={"autoinstall_known_extensions": False}))
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                if _is_lock_error(exc):
                    raise WarehouseLockedError(
                        f"{db_path} stayed locked for {timeout_seconds:.0f}s by another process "
                        "(an open notebook or `duckdb` shell holds it: close that connection, or query a copy)"
                    ) from exc
                raise
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 0.2)  # short: readers hold the file for one query at a time


# A close checkpoints the WAL into the file, and a checkpoint costs time in proportion to the file's size (4 ms at
# 0.3 GiB, 24 ms at 9.5 GiB, for a one-row change), however little was written. Most of a tick's connections write
# a few rows (a watermark, a check): below this many WAL bytes they leave the WAL for the next opener to replay
# (about 7 ms a MiB) and the next heavy write, or DuckDB's own 16 MiB auto-checkpoint, folds it in.
CHECKPOINT_MIN_WAL_BYTES = 1 << 20


def close(conn: duckdb.DuckDBPyConnection, db_path: Path | str) -> None:
    """Close a writer's connection, checkpointing only when its WAL has grown to `CHECKPOINT_MIN_WAL_BYTES`. The WAL
    is durable either way: a commit is on disk once it returns, checkpointed or not."""
    try:
        wal = Path(f"{db_path}.wal")
        small = wal.exists() and wal.stat().st_size < CHECKPOINT_MIN_WAL_BYTES
        # a database setting: an earlier connection of the same open database may have turned it off
        conn.execute("PRAGMA disable_checkpoint_on_shutdown" if small else "PRAGMA enable_checkpoint_on_shutdown")
    except (OSError, duckdb.Error):
        pass  # then the close checkpoints as usual
    conn.close()


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit when the block ends, roll back (and re-raise) if anything in it fails."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def open_warehouse(db_path: Path | str, *, read_only: bool = False, timeout_seconds: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """`with open_warehouse(path) as conn:` opens, ensures the schema (writers only), and always closes."""
    conn = connect(db_path, read_only=read_only, timeout_seconds=timeout_seconds)
    try:
        if not read_only:
            from kalshi_shadow.warehouse.ddl import ensure_schema

            ensure_schema(conn)
        yield conn
    finally:
        if read_only:
            conn.close()
        else:
            close(conn, db_path)
