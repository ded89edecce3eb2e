"""Crash-safe append-only Parquet micro-batches.

A batch is written to `<name>.partial`, fsynced, renamed to `<name>.parquet` and the directory fsynced, so a
reader only ever sees whole files and a process killed mid-write leaves at most a `.partial` (never listed,
swept on the next start). A row is "acknowledged to disk" once the `flush()` that wrote it returned.

Layout: `<raw_dir>/<table>/date=YYYY-MM-DD/<UTC yyyymmddTHHMMSSffffff>-<writer>-<seq>.parquet`; names sort by
creation time, which is the order loaders use.

The name is a promise the loader relies on (see `warehouse/frontier.py`): writer `w`'s file `seq` holds every row
handed to the writer before its flush time, and `seq` counts 1, 2, 3... without gaps. So once files 1..k of a
writer are loaded, everything it saw up to file k's flush time is loaded. A writer with `heartbeat_seconds`
writes an empty file when it had nothing to say for that long, so "nothing happened" is distinguishable from
"not arrived yet".
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl

from kalshi_shadow.raw.schemas import RAW_SCHEMAS

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_SECONDS = 60.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_batch_atomically(df: pl.DataFrame, directory: Path, name: str) -> Path:
    """Write `df` as `directory/name.parquet`, visible only once complete and durable."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}.parquet"
    partial = directory / f"{name}{PARTIAL_SUFFIX}"
    with open(partial, "wb") as fh:
        df.write_parquet(fh, compression="zstd", statistics=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, final)
    _fsync_dir(directory)
    return final


@dataclass(frozen=True)
class RawFileName:
    """The parts of a raw file's name: when it was flushed, by which writer, its place in that writer's sequence."""

    flushed_at: datetime
    writer: str
    seq: int

    @classmethod
    def parse(cls, name: str) -> "RawFileName | None":
        """None for names that do not follow the layout (e.g. files placed by hand)."""
        parts = Path(name).stem.split("-")
        if len(parts) != 3:
            return None
        try:
            flushed = datetime.strptime(parts[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
            return cls(flushed, parts[1], int(parts[2]))
        except ValueError:
            return None


def list_raw_files(raw_dir: Path, table: str) -> list[Path]:
    """Every complete raw file of `table`, oldest first. `.partial` files are never listed."""
    root = Path(raw_dir) / table
    if not root.is_dir():
        return []
    return sorted(root.glob("date=*/*.parquet"), key=lambda p: (p.parent.name, p.name))


def sweep_partials(raw_dir: Path, table: str, older_than_seconds: float = STALE_PARTIAL_SECONDS) -> int:
    """Delete `.partial` files left by a killed writer. Returns how many were removed."""
    root = Path(raw_dir) / table
    removed = 0
    cutoff = time.time() - older_than_seconds
    for p in root.glob(f"date=*/*{PARTIAL_SUFFIX}") if root.is_dir() else []:
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
                log.warning("removed unfinished raw batch %s (writer was killed mid-write)", p)
        except FileNotFoundError:
            pass
    return removed


class RawWriter:
    """Buffers rows of one raw table and flushes them as whole Parquet files.

    Flushes when `flush_rows` rows are buffered or `flush_seconds` passed since the first unflushed row
    (checked on `append` and by `maybe_flush`, which a collector calls from its loop), and writes an empty
    heartbeat file after `heartbeat_seconds` without a file. `extend` adds all its rows before it may flush, so a
    batch captured at one instant never straddles two files. Thread-safe.
    Rows with columns not in the schema are rejected (a programming error, not bad input).
    """

    def __init__(
        self,
        raw_dir: Path,
        table: str,
        *,
        flush_rows: int = 5000,
        flush_seconds: float = 2.0,
        writer_id: str | None = None,
        heartbeat_seconds: float | None = None,
    ) -> None:
        if table not in RAW_SCHEMAS:
            raise KeyError(f"unknown raw table {table!r}")
        self.raw_dir = Path(raw_dir)
        self.table = table
        self.schema = RAW_SCHEMAS[table]
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._last_file_at = time.monotonic()
        self.writer_id = writer_id or f"{os.getpid()}{uuid.uuid4().hex[:6]}"
        self._rows: list[Mapping[str, Any]] = []
        self._first_row_at: float | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self.rows_flushed = 0
        self.files_written = 0
        sweep_partials(self.raw_dir, table)

    def _add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        for row in rows:
            extra = set(row) - set(self.schema)
            if extra:
                raise KeyError(f"{self.table}: columns not in schema: {sorted(extra)}")
        with self._lock:
            self._rows.extend(rows)
            if rows and self._first_row_at is None:
                self._first_row_at = time.monotonic()

    def append(self, row: Mapping[str, Any]) -> Path | None:
        self._add([row])
        return self.maybe_flush()

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> Path | None:
        self._add(rows)
        return self.maybe_flush()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def maybe_flush(self) -> Path | None:
        now = time.monotonic()
        due = self._first_row_at is not None and (
            len(self._rows) >= self.flush_rows or now - self._first_row_at >= self.flush_seconds
        )
        heartbeat = self.heartbeat_seconds is not None and now - self._last_file_at >= self.heartbeat_seconds
        return self.flush(heartbeat=heartbeat) if due or heartbeat else None

    def flush(self, *, heartbeat: bool = False) -> Path | None:
        """Write the buffered rows; with nothing buffered, an empty file if `heartbeat`, else nothing."""
        with self._lock:
            if not self._rows and not heartbeat:
                return None
            rows, self._rows, self._first_row_at = self._rows, [], None
            now = datetime.now(timezone.utc)
            df = pl.DataFrame(rows, schema=self.schema)
            self._seq += 1
            name = f"{now:%Y%m%dT%H%M%S%f}-{self.writer_id}-{self._seq:06d}"
            path = write_batch_atomically(df, self.raw_dir / self.table / f"date={now:%Y-%m-%d}", name)
            self.rows_flushed += len(rows)
            self.files_written += 1
            self._last_file_at = time.monotonic()
            return path
