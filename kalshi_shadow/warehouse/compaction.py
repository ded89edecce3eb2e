"""Compaction of loaded raw micro-batches into hourly archive files.

Collectors write a file per table every few seconds (~17k a day each). Once loaded, the files of a closed hour
are rewritten as one Parquet file under `raw/_archive/<table>/date=YYYY-MM-DD/HH-<digest>.parquet` and removed,
so the raw folders hold only what is still to load and listing them stays cheap. Nothing is lost: every row is
in an archive file, and `raw_file_loads.archived_to` says which.

Crash safety, step by step: (1) write the archive atomically, (2) record `archived_to` in the ledger, (3) delete
the sources. A crash after (1) leaves an archive no ledger row names: it is deleted and rewritten next time. A
crash after (2) leaves sources whose ledger row is archived: they are deleted next time. The loader never lists
the archive, so nothing is loaded twice. Ledger reads are bounded by the files' flush times (`ledger_since`), so an
hour's compaction costs the same after months.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from kalshi_shadow.raw.store import RawFileName, _fsync_dir, list_raw_files
from kalshi_shadow.warehouse.loader import ledger_since, pending_files

log = logging.getLogger(__name__)

ARCHIVE = "_archive"


def archive_dir(raw_dir: Path) -> Path:
    return Path(raw_dir) / ARCHIVE


def compact_loaded(conn: duckdb.DuckDBPyConnection, raw_dir: Path | str, table: str, *, now: datetime | None = None,
                   settle: timedelta = timedelta(minutes=5)) -> dict[str, int]:
    """Archive the loaded files of every hour that closed at least `settle` ago; returns counts."""
    raw_dir = Path(raw_dir)
    now = now or datetime.now(timezone.utc)
    cutoff = (now - settle).replace(minute=0, second=0, microsecond=0)
    names = [RawFileName.parse(p.name) for p in list_raw_files(raw_dir, table)]
    if not any(n is not None and n.flushed_at < cutoff for n in names):  # the usual case: nothing from a closed hour
        return {"archives": 0, "files_compacted": 0}
    _, loaded = pending_files(conn, raw_dir, table)
    if not loaded:
        return {"archives": 0, "files_compacted": 0}
    archived = dict(conn.execute(
        "SELECT file_name, archived_to FROM raw_file_loads WHERE table_name = ? AND archived_to IS NOT NULL AND loaded_at >= ? "
        "AND file_name IN (SELECT unnest(?::VARCHAR[]))",
        [table, ledger_since([rel for rel, _ in loaded]), [rel for rel, _ in loaded]]).fetchall())
    for rel, path in loaded:  # step (3) of an earlier run that crashed before it finished
        if rel in archived:
            path.unlink(missing_ok=True)
    groups: dict[tuple[str, str], list[tuple[str, Path]]] = defaultdict(list)
    for rel, path in loaded:
        name = RawFileName.parse(rel)
        if rel in archived or name is None or name.flushed_at >= cutoff:
            continue
        groups[(path.parent.name, f"{name.flushed_at:%H}")].append((rel, path))
    files = 0
    for (day, hour), members in sorted(groups.items()):
        files += _archive_group(conn, raw_dir, table, day, hour, members)
    return {"archives": len(groups), "files_compacted": files}


def _archive_group(conn: duckdb.DuckDBPyConnection, raw_dir: Path, table: str, day: str, hour: str,
                   members: list[tuple[str, Path]]) -> int:
    out_dir = archive_dir(raw_dir) / table / day
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1("\n".join(sorted(rel for rel, _ in members)).encode()).hexdigest()[:12]
    final = out_dir / f"{hour}-{digest}.parquet"
    rel_final = str(final.relative_to(raw_dir))
    since = ledger_since([rel for rel, _ in members])  # every file archived into this hour was flushed in it
    named = {r[0] for r in conn.execute("""SELECT DISTINCT archived_to FROM raw_file_loads
                                           WHERE table_name = ? AND loaded_at >= ? AND archived_to LIKE ?""",
                                        [table, since, f"{ARCHIVE}/{table}/{day}/{hour}-%"]).fetchall()}
    for stray in out_dir.glob(f"{hour}-*.parquet"):  # step (1) of a crashed run: no ledger row names it
        if str(stray.relative_to(raw_dir)) not in named:
            stray.unlink()
    partial = final.with_suffix(".partial")
    conn.execute(f"COPY (SELECT * FROM read_parquet(?, union_by_name = true)) TO '{partial}' (FORMAT parquet, COMPRESSION zstd)",
                 [[str(p) for _, p in members]])
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    _fsync_dir(out_dir)
    conn.execute("""UPDATE raw_file_loads SET archived_to = ?
                    WHERE table_name = ? AND loaded_at >= ? AND file_name IN (SELECT unnest(?::VARCHAR[]))""",
                 [rel_final, table, since, [rel for rel, _ in members]])
    for _, path in members:
        path.unlink(missing_ok=True)
    today = f"date={datetime.now(timezone.utc):%Y-%m-%d}"
    for d in {p.parent for _, p in members}:
        if d.name < today:  # a closed day's folder, once empty (today's may be written into at any moment)
            try:
                d.rmdir()
            except OSError:
                pass
    log.info("compacted %d %s files of %s %s:00 into %s", len(members), table, day, hour, rel_final)
    return len(members)
