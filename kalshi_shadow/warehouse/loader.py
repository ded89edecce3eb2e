"""Exactly-once loading of raw Parquet batches into the warehouse.

- **Exactly once.** A file's rows and its `raw_file_loads` ledger row are inserted in one transaction, so a crash
  in between neither double-loads nor loses it.
- **Natural keys.** A row already in the warehouse under its natural key (a trade id, a quote's full content) is
  not inserted again, so a raw row written twice becomes one warehouse row; the ledger counts it.
- **Quarantine.** A file that cannot be read, including one whose footer is fine but whose pages are corrupt, is
  moved to `raw/_quarantine/`, recorded in `raw_file_failures`, and loading goes on with the other files.
- **Only what is new.** Loaded files are compacted into hourly archives (`compaction.py`), so the raw folders
  hold little more than what has not been loaded yet.
- **Frontier.** Each load advances its writers' gap-free prefixes (`frontier.py`), in the same transaction.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from kalshi_shadow.raw import RAW_SCHEMAS
from kalshi_shadow.raw.store import RawFileName, list_raw_files
from kalshi_shadow.warehouse.connection import transaction
from kalshi_shadow.warehouse.frontier import advance_writers

log = logging.getLogger(__name__)

QUARANTINE = "_quarantine"

# One natural key per raw table: two rows with the same key are the same observation. Every key includes `ts`
# (or implies it: a trade id has one time), so a duplicate is looked for only within the new rows' time range.
# `{a}` is the table alias (empty for the staged rows).
_QUOTE_FIELDS = ("status", "yes_bid", "yes_ask", "no_bid", "no_ask", "yes_bid_size", "yes_ask_size", "last_price",
                 "volume", "open_interest")
QUOTE_KEY_SQL = ("md5(concat_ws('|', {a}ticker, epoch_us({a}ts), coalesce({a}source, '-'), "
                 "coalesce(epoch_us({a}received_ts)::VARCHAR, '-'), "
                 + ", ".join(f"coalesce({{a}}{c}::VARCHAR, '-')" for c in _QUOTE_FIELDS)
                 # depth only where present: concat_ws skips NULLs, so a REST row keeps the key it always had
                 + ", {a}yes_bid_levels::VARCHAR, {a}no_bid_levels::VARCHAR))::UUID")
NATURAL_KEYS = {
    "spot_ticks": "{a}product_id || '|' || coalesce({a}trade_id::VARCHAR, epoch_us({a}ts) || '|' || coalesce({a}sequence::VARCHAR, '-'))",
    "kraken_trades": "{a}symbol || '|' || coalesce({a}trade_id::VARCHAR, epoch_us({a}ts)::VARCHAR)",
    "bitstamp_trades": "{a}symbol || '|' || coalesce({a}trade_id::VARCHAR, epoch_us({a}ts)::VARCHAR)",
    "cfb_index_values": "{a}index_id || '|' || epoch_us({a}ts)",  # CF Benchmarks sends one value per index and time
    "kalshi_quotes": QUOTE_KEY_SQL,
    "kalshi_markets": "{a}ticker || '|' || epoch_us({a}ts) || '|' || md5(concat_ws('|', coalesce({a}status, '-'), "
                      "coalesce({a}strike_type, '-'), coalesce({a}floor_strike::VARCHAR, '-'), coalesce({a}cap_strike::VARCHAR, '-'), "
                      "coalesce(epoch_us({a}close_time)::VARCHAR, '-'), coalesce({a}result, '-'), coalesce({a}raw_json, '-')))",
    "kalshi_series": "{a}series_ticker || '|' || epoch_us({a}ts) || '|' || md5(concat_ws('|', coalesce({a}fee_type, '-'), "
                     "coalesce({a}fee_multiplier::VARCHAR, '-'), coalesce({a}raw_json, '-')))",
    "kalshi_exchange_status": "epoch_us({a}ts) || '|' || coalesce(epoch_us({a}received_ts)::VARCHAR, '-')",
    "kalshi_lifecycle": "{a}ticker || '|' || {a}event_type || '|' || epoch_us({a}ts)",
    "collector_events": "{a}collector || '|' || {a}kind || '|' || epoch_us({a}ts) || '|' || coalesce({a}detail, '-')",
}
# Where the table stores its key, if it does (cheaper than recomputing it over existing rows).
STORED_KEYS = {"kalshi_quotes": "quote_key"}


@dataclass(frozen=True)
class LoadResult:
    table: str
    files: int
    rows: int
    duplicates: int
    min_ts: datetime | None
    max_ts: datetime | None
    failed_files: list[str]


# A file is loaded after it was written; the ledger rows of files still on disk are looked for from the earliest
# flush time among them, less this margin (a clock stepped back between writing and loading).
LEDGER_MARGIN = timedelta(days=1)


def ledger_since(names: list[str]) -> datetime:
    """Where in the ledger (by `loaded_at`, which grows as rows are appended, so zone maps skip the rest) the rows of
    these raw files can be: from the earliest of their flush times, less `LEDGER_MARGIN`. A name that does not
    follow the layout (a file placed by hand) could be anywhere: the whole ledger."""
    times = [RawFileName.parse(n) for n in names]
    if not times or any(t is None for t in times):
        return datetime.min.replace(tzinfo=timezone.utc)
    return min(t.flushed_at for t in times) - LEDGER_MARGIN


def pending_files(conn: duckdb.DuckDBPyConnection, raw_dir: Path, table: str) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(new files, files already loaded but still on disk), oldest first. Files on disk are few (loaded ones are
    archived every hour) and recent, so only the recent end of the ledger is read, however long it has grown."""
    on_disk = [(str(p.relative_to(raw_dir)), p) for p in list_raw_files(raw_dir, table)]
    if not on_disk:
        return [], []
    conn.execute("CREATE OR REPLACE TEMP TABLE _on_disk (file_name VARCHAR)")
    conn.executemany("INSERT INTO _on_disk VALUES (?)", [[rel] for rel, _ in on_disk])
    done = {r[0] for r in conn.execute("""
        SELECT file_name FROM _on_disk
        SEMI JOIN (SELECT file_name FROM raw_file_loads WHERE table_name = $t AND loaded_at >= $since) USING (file_name)
        UNION ALL
        SELECT file_name FROM _on_disk SEMI JOIN (SELECT file_name FROM raw_file_failures WHERE table_name = $t) USING (file_name)
    """, {"t": table, "since": ledger_since([rel for rel, _ in on_disk])}).fetchall()}
    conn.execute("DROP TABLE _on_disk")
    return [f for f in on_disk if f[0] not in done], [f for f in on_disk if f[0] in done]


def _columns(conn: duckdb.DuckDBPyConnection, table: str, paths: list[str]) -> str:
    """The select list of the raw schema's columns over these files. A column none of them has (written by a
    collector from before the column existed) is NULL, typed as the warehouse column: an older file loads, it
    is not quarantined. (`union_by_name` already fills a column that only some of the files lack.)"""
    present = {r[0] for r in conn.execute("SELECT name FROM parquet_schema(?)", [paths]).fetchall()}
    types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                              "AND table_schema = 'main'", [table]).fetchall())
    missing = [c for c in RAW_SCHEMAS[table] if c not in present]
    if missing:
        log.info("%s: %s not in these raw files (written before the column existed): loaded as NULL", table, ", ".join(missing))
    return ", ".join(f"r.{c}" if c in present else f"NULL::{types[c]} AS {c}" for c in RAW_SCHEMAS[table])


def _stage(conn: duckdb.DuckDBPyConnection, table: str, files: list[tuple[str, Path]]) -> None:
    """Read the files whole into `_staged` (every page decoded) with their load ids and natural keys."""
    cols = _columns(conn, table, [str(p) for _, p in files])
    conn.execute("CREATE OR REPLACE TEMP TABLE _new_files (file_name VARCHAR, path VARCHAR, load_id BIGINT)")
    conn.executemany("INSERT INTO _new_files VALUES (?, ?, nextval('raw_file_load_ids'))", [[rel, str(p)] for rel, p in files])
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _staged AS
        SELECT *, {NATURAL_KEYS[table].format(a="")} AS _nk FROM (
            SELECT {cols}, f.load_id
            FROM read_parquet(?, union_by_name = true, filename = true) AS r JOIN _new_files AS f ON r.filename = f.path)
    """, [[str(p) for _, p in files]])


def _quarantine(conn: duckdb.DuckDBPyConnection, raw_dir: Path, table: str, files: list[tuple[str, Path]]) -> tuple[list[tuple[str, Path]], list[str]]:
    """After a batch read failed: read each file alone; move the broken ones aside and record them."""
    good, bad = [], []
    for rel, p in files:
        try:
            _stage(conn, table, [(rel, p)])
            good.append((rel, p))
        except duckdb.Error as exc:
            name = RawFileName.parse(rel)
            dest = raw_dir / QUARANTINE / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            log.error("raw file %s cannot be read; moved to %s: %s", rel, dest, str(exc)[:300])
            conn.execute("INSERT INTO raw_file_failures VALUES (?, ?, ?, now(), ?, ?, ?) ON CONFLICT DO NOTHING",
                         [table, rel, f"quarantined: {str(exc)[:450]}", name.writer if name else None,
                          name.seq if name else None, name.flushed_at if name else None])
            bad.append(rel)
    return good, bad


def load_new_files(conn: duckdb.DuckDBPyConnection, raw_dir: Path | str, table: str, *, max_files: int = 5000,
                   now: datetime | None = None) -> LoadResult:
    raw_dir = Path(raw_dir)
    now = now or datetime.now(timezone.utc)
    cols = list(RAW_SCHEMAS[table])
    files = pending_files(conn, raw_dir, table)[0][:max_files]
    failed: list[str] = []
    if files:
        try:
            _stage(conn, table, files)
        except duckdb.Error:
            files, failed = _quarantine(conn, raw_dir, table, files)
            if files:
                _stage(conn, table, files)
    key_col = STORED_KEYS.get(table)
    existing_key = f"t.{key_col}" if key_col else NATURAL_KEYS[table].format(a="t.")
    try:
        with transaction(conn):
            rows = dups = 0
            min_ts = max_ts = None
            writers = set()
            if files:
                lo, hi = conn.execute("SELECT min(ts), max(ts) FROM _staged").fetchall()[0]
                extra_cols = f", {key_col}" if key_col else ""
                conn.execute(f"""
                    INSERT INTO {table} ({", ".join(cols)}{extra_cols}, load_id)
                    SELECT {", ".join(cols)}{", _nk" if key_col else ""}, load_id FROM _staged AS s
                    WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.ts BETWEEN $lo AND $hi AND {existing_key} = s._nk)
                    QUALIFY row_number() OVER (PARTITION BY _nk ORDER BY load_id) = 1
                """, {"lo": lo, "hi": hi})
                ledger = []
                counts = dict(conn.execute("SELECT load_id, count(*) FROM _staged GROUP BY 1").fetchall())
                inserted = dict(conn.execute(f"SELECT load_id, count(*) FROM {table} WHERE load_id IN (SELECT load_id FROM _new_files) "
                                             "GROUP BY 1").fetchall())
                for rel, _path, load_id in conn.execute("SELECT file_name, path, load_id FROM _new_files").fetchall():
                    name = RawFileName.parse(rel)
                    n, k = counts.get(load_id, 0), inserted.get(load_id, 0)
                    ledger.append([load_id, table, rel, n, now, name.writer if name else None, name.seq if name else None,
                                   name.flushed_at if name else None, n - k])
                    rows, dups = rows + k, dups + n - k
                    if name:
                        writers.add(name.writer)
                conn.executemany("""INSERT INTO raw_file_loads (load_id, table_name, file_name, row_count, loaded_at, writer, seq,
                                    flushed_at, duplicate_rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""", ledger)
                if rows:
                    min_ts, max_ts = conn.execute(f"SELECT min(ts), max(ts) FROM {table} WHERE load_id IN (SELECT load_id FROM _new_files)").fetchall()[0]
            writers |= {name.writer for name in map(RawFileName.parse, failed) if name}
            first = conn.execute("SELECT min(load_id) FROM _new_files").fetchall()[0][0] if files else None
            advance_writers(conn, table, writers, now, since_load_id=first)
    finally:
        conn.execute("DROP TABLE IF EXISTS _staged")
        conn.execute("DROP TABLE IF EXISTS _new_files")
    if files or failed:
        log.info("loaded %d rows (%d duplicates skipped) from %d %s files", rows, dups, len(files), table)
    return LoadResult(table, len(files), rows, dups, min_ts, max_ts, failed)
