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

A write that fails (disk full: ENOSPC, EFBIG, EDQUOT, or any other OSError) consumes nothing: the `.partial` is
removed, the batch stays buffered ahead of rows added since, and its sequence number stays unused, so the next
attempt writes the same `seq` with everything in it and the promise above holds across the outage. `flush` then
returns None instead of raising (a collector must neither crash nor lose rows); `RawWriter.failing`,
`write_failures` and `last_write_error` say what happened.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import polars as pl

from kalshi_shadow.raw.schemas import RAW_SCHEMAS

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_SECONDS = 60.0
RETRY_SECONDS = 1.0  # after a failed write, `maybe_flush` waits this long before trying again
REPEAT_LOG_SECONDS = 60.0  # while writes keep failing, one log line per this long, not one per attempt


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_batch_atomically(df: pl.DataFrame, directory: Path, name: str) -> Path:
    """Write `df` as `directory/name.parquet`, visible only once complete and durable.

    The Parquet bytes are built in memory first, so a failing disk raises the plain OSError of the write (with its
    errno: ENOSPC, EFBIG, EDQUOT...) and a failed attempt leaves no `.partial` behind. An error after the rename
    (the directory fsync) is raised too, though the file is then already visible."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    final = directory / f"{name}.parquet"
    partial = directory / f"{name}{PARTIAL_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            data = buf.getbuffer()
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)
    except BaseException:
        try:
            partial.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # the sweep on the next start removes it
            log.warning("could not remove unfinished raw batch %s: %s", partial, exc)
        raise
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

    A failed write keeps the batch (as the DataFrame already built) and its sequence number; `flush` returns None,
    `failing` is True and the error is logged once (again every `REPEAT_LOG_SECONDS` while it lasts, and once when
    writing works again). `maybe_flush` retries at most every `retry_seconds`; an explicit `flush` always tries.
    `clock` (a zero-argument callable returning an aware datetime) gives the flush time in the file name.
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
        clock: Callable[[], datetime] | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        if table not in RAW_SCHEMAS:
            raise KeyError(f"unknown raw table {table!r}")
        self.raw_dir = Path(raw_dir)
        self.table = table
        self.schema = RAW_SCHEMAS[table]
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_seconds = retry_seconds
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._last_file_at = time.monotonic()
        self.writer_id = writer_id or f"{os.getpid()}{uuid.uuid4().hex[:6]}"
        self._rows: list[Mapping[str, Any]] = []
        self._held: pl.DataFrame | None = None  # a batch whose write failed, ahead of `_rows`
        self._first_row_at: float | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self.rows_flushed = 0
        self.files_written = 0
        self.write_failures = 0  # failed write attempts, ever
        self.last_write_error: str | None = None
        self.failing_since: datetime | None = None  # first failure of the current run of failures (None: writing)
        self._failed_attempts = 0  # of the current run
        self._retry_at = 0.0
        self._logged_at = 0.0
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
        """Rows handed to the writer and not yet in a file (including a batch whose write failed)."""
        held = self._held
        return len(self._rows) + (held.height if held is not None else 0)

    @property
    def seq(self) -> int:
        """The sequence number of the last file written (0 before the first)."""
        return self._seq

    @property
    def failing(self) -> bool:
        """True from a failed write until the next successful one."""
        return self.failing_since is not None

    def maybe_flush(self) -> Path | None:
        now = time.monotonic()
        if self.failing and now < self._retry_at:
            return None
        due = self._first_row_at is not None and (
            self.pending >= self.flush_rows or now - self._first_row_at >= self.flush_seconds
        )
        heartbeat = self.heartbeat_seconds is not None and now - self._last_file_at >= self.heartbeat_seconds
        return self.flush(heartbeat=heartbeat) if due or heartbeat else None

    def _batch(self) -> pl.DataFrame:
        """The held batch followed by the rows added since, as one frame (under the lock)."""
        if not self._rows:
            return self._held if self._held is not None else pl.DataFrame(schema=self.schema)
        try:
            new = pl.DataFrame(self._rows, schema=self.schema)
        except Exception:
            # Rows that do not fit the schema are a programming error; kept, they would fail every later flush.
            log.error("%s: dropping %d buffered rows that do not fit the schema", self.table, len(self._rows))
            self._rows = []
            if self._held is None:
                self._first_row_at = None
            raise
        return new if self._held is None else pl.concat([self._held, new], how="vertical")

    def flush(self, *, heartbeat: bool = False) -> Path | None:
        """Write the buffered rows; with nothing buffered, an empty file if `heartbeat`, else nothing.

        Returns the file written, or None if there was nothing to write or the write failed (see `failing`)."""
        with self._lock:
            if not self._rows and self._held is None and not heartbeat:
                return None
            df = self._batch()
            now = self._clock()
            if now.tzinfo is None:
                raise ValueError("RawWriter clock must return an aware datetime")
            now = now.astimezone(timezone.utc)
            seq = self._seq + 1
            name = f"{now:%Y%m%dT%H%M%S%f}-{self.writer_id}-{seq:06d}"
            directory = self.raw_dir / self.table / f"date={now:%Y-%m-%d}"
            try:
                path = write_batch_atomically(df, directory, name)
            except OSError as exc:
                path = directory / f"{name}.parquet"
                if not path.exists():
                    self._held, self._rows = (df if df.height else None), []  # a failed heartbeat is just retried
                    self._failed(exc, path, df.height)
                    return None
                # Renamed, so visible and whole; only its directory's fsync failed. Written, or the next file would
                # reuse its sequence number.
                log.error("%s: wrote %s but could not fsync its directory: %s", self.table, path, exc)
            if self.failing:
                log.warning("%s: writing works again: %d rows held through %d failed attempts since %s are in %s",
                            self.table, df.height, self._failed_attempts, f"{self.failing_since:%Y-%m-%dT%H:%M:%SZ}", path.name)
            self._seq = seq
            self._held, self._rows, self._first_row_at = None, [], None
            self.failing_since, self._failed_attempts = None, 0
            self.rows_flushed += df.height
            self.files_written += 1
            self._last_file_at = time.monotonic()
            return path

    def _failed(self, exc: OSError, path: Path, rows: int) -> None:
        """A write failed: count it, schedule the retry, log (throttled)."""
        mono = time.monotonic()
        self.write_failures += 1
        self._failed_attempts += 1
        reason = f"{errno.errorcode.get(exc.errno, 'errno ' + str(exc.errno)) if exc.errno else type(exc).__name__}"
        reason += f" ({exc.strerror or exc})"
        self.last_write_error = f"{reason} writing {path}"
        self._retry_at = mono + self.retry_seconds
        if self.failing_since is None:
            self.failing_since = datetime.now(timezone.utc)
            self._logged_at = mono
            log.error("%s: could not write %s: %s; keeping its %d rows and sequence number, retrying",
                      self.table, path, reason, rows)
        elif mono - self._logged_at >= REPEAT_LOG_SECONDS:
            self._logged_at = mono
            log.error("%s: still cannot write %s: %s; %d failed attempts since %s, %d rows held",
                      self.table, path, reason, self._failed_attempts, f"{self.failing_since:%Y-%m-%dT%H:%M:%SZ}", rows)
