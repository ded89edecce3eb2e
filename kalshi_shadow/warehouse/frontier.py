"""How far each raw table is complete, from the writers' gap-free file sequences.

A raw writer numbers its files 1, 2, 3... and each file holds everything the writer saw before its flush time
(`kalshi_shadow/raw/store.py`). So when a writer's files 1..k have all arrived, the table is complete up to file
k's flush time *for that writer*. A table's frontier is the newest such time over its writers, held back by any
writer with a hole in its sequence: files can land in any order, and pricing a quote before the spot, terms or
fees it should have seen would make the live row differ from a backfill.

A hole that stays open longer than the gap timeout is given up on: the missing files are recorded in
`raw_file_failures` ('never arrived') and counted by a check, and the frontier moves on.

A writer's frontier never goes back: a file flushed before the one it follows (the wall clock stepped backwards)
is recorded in `raw_clock_steps` and leaves the writer at its latest flush time, so pricing goes on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import duckdb

from kalshi_shadow.config import env_number

log = logging.getLogger(__name__)

# The inputs a snapshot needs before its quote may be priced: the index grid (itself written only as far as every
# live venue's files are complete, `pricing/index.py`), market terms, series fees.
PRICING_INPUTS = ("spot_index", "kalshi_markets", "kalshi_series")
# Inputs that hold pricing back once they have ever arrived: the exchange's trading status (`trading_active` on each
# snapshot) came with a later release, and a warehouse or a history without it still prices.
OPTIONAL_INPUTS = ("kalshi_exchange_status",)


def gap_timeout() -> timedelta:
    return timedelta(seconds=env_number("KALSHI_SHADOW_RAW_GAP_SECONDS", 600, minimum=0))


def advance_writers(conn: duckdb.DuckDBPyConnection, table: str, writers: set[str], now: datetime,
                    since_load_id: int | None = None) -> int:
    """Move each writer's contiguous prefix forward over the files that have arrived; returns files given up on.

    Runs inside the load's transaction, for the writers of the new files and every writer of the table with an
    open hole (a writer that died after leaving one writes nothing more, yet its hole must still time out). Reads
    only the files past each prefix: for a writer without a hole these are files of this load (`since_load_id`,
    its first load id, bounds the ledger by zone maps), so the cost follows what is new, not the length of history."""
    given_up = 0
    holes = {w for (w,) in conn.execute("SELECT writer FROM raw_writer_progress WHERE table_name = ? AND max_seq > contiguous_seq",
                                        [table]).fetchall()}
    for writer in sorted(writers | holes):
        prog = conn.execute("""SELECT contiguous_seq, contiguous_flushed_at, gap_since, contiguous_file_flushed_at
                               FROM raw_writer_progress WHERE table_name = ? AND writer = ?""", [table, writer]).fetchall()
        seq, flushed_at, gap_since, last_file = prog[0] if prog else (0, None, None, None)
        last_file = last_file or flushed_at
        bound = since_load_id if since_load_id is not None and writer not in holes else -2**62
        arrived = conn.execute("""
            SELECT seq, flushed_at FROM raw_file_loads WHERE table_name = $t AND writer = $w AND seq > $s AND load_id >= $l
            UNION ALL
            SELECT seq, flushed_at FROM raw_file_failures WHERE table_name = $t AND writer = $w AND seq > $s
            ORDER BY seq""", {"t": table, "w": writer, "s": seq, "l": bound}).fetchall()
        if not arrived and not prog:
            continue
        max_seq = max([seq] + [a[0] for a in arrived])
        max_flushed = max([f for f in [flushed_at] + [a[1] for a in arrived] if f is not None])
        for s, f in arrived:
            if s == seq + 1:
                seq, flushed_at, last_file = s, _after_clock_step(conn, table, writer, s, f, flushed_at, last_file, now), f
            elif s > seq + 1:
                gap_since = gap_since or now
                if now - gap_since < gap_timeout():
                    break
                for missing in range(seq + 1, s):
                    conn.execute("""INSERT INTO raw_file_failures (table_name, file_name, error, failed_at, writer, seq)
                                    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                                 [table, f"{table}/?/{writer}-{missing:06d}", "never arrived: gap in the writer's sequence",
                                  now, writer, missing])
                    given_up += 1
                seq, flushed_at, last_file, gap_since = s, _after_clock_step(conn, table, writer, s, f, flushed_at, last_file, now), f, None
        if seq == max_seq:
            gap_since = None
        conn.execute("""
            INSERT INTO raw_writer_progress BY NAME
            SELECT ? AS table_name, ? AS writer, ? AS contiguous_seq, ? AS contiguous_flushed_at, ? AS max_seq,
                   ? AS max_flushed_at, ? AS gap_since, ? AS contiguous_file_flushed_at
            ON CONFLICT (table_name, writer) DO UPDATE SET
                contiguous_seq = excluded.contiguous_seq, contiguous_flushed_at = excluded.contiguous_flushed_at,
                max_seq = excluded.max_seq, max_flushed_at = excluded.max_flushed_at, gap_since = excluded.gap_since,
                contiguous_file_flushed_at = excluded.contiguous_file_flushed_at
        """, [table, writer, seq, flushed_at, max_seq, max_flushed, gap_since, last_file])
    return given_up


def _after_clock_step(conn: duckdb.DuckDBPyConnection, table: str, writer: str, seq: int, flushed_at: datetime,
                      frontier: datetime | None, previous: datetime | None, now: datetime) -> datetime:
    """The writer's contiguous flush time once file `seq` (flushed at `flushed_at`) is in: never earlier than the
    `frontier` it had. A file flushed before the file it follows (`previous`) means the clock stepped back: logged
    and recorded once (raw_clock_steps); the files after it are in order again, though still behind the frontier
    until the clock has caught up, and the frontier keeps its time, so pricing does not stop."""
    if previous is not None and flushed_at < previous:
        step = (previous - flushed_at).total_seconds()
        log.warning("%s writer %s: file %d flushed at %s, %.1f s before the file it follows: the clock stepped back",
                    table, writer, seq, flushed_at.isoformat(), step)
        conn.execute("INSERT INTO raw_clock_steps VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     [table, writer, seq, flushed_at, previous, step, now])
    return flushed_at if frontier is None else max(frontier, flushed_at)


FRONTIER_SQL = """
SELECT least(max(contiguous_flushed_at),
             -- a writer with a hole holds the table back to where its hole starts ('-infinity' if at its start)
             min(coalesce(contiguous_flushed_at, '-infinity'::TIMESTAMPTZ)) FILTER (WHERE max_seq > contiguous_seq))
FROM raw_writer_progress WHERE table_name = ?
"""


def table_frontier(conn: duckdb.DuckDBPyConnection, table: str) -> datetime | None:
    """Everything the table's writers saw up to this time is loaded; None if nothing has arrived."""
    value = conn.execute(FRONTIER_SQL, [table]).fetchall()[0][0]
    return None if value is None or value == datetime.min else value


def pricing_frontier(conn: duckdb.DuckDBPyConnection) -> tuple[datetime | None, dict[str, datetime | None]]:
    """The time up to which every input of a snapshot is complete: the minimum over the index, terms and fees."""
    from kalshi_shadow.pricing.index import index_frontier  # pricing builds on this module, not the other way

    each = {t: index_frontier(conn) if t == "spot_index" else table_frontier(conn, t) for t in PRICING_INPUTS}
    known = list(each.values())
    for t in OPTIONAL_INPUTS:
        each[t] = table_frontier(conn, t)
        if each[t] is not None:
            known.append(each[t])
    return (None if any(v is None for v in known) else min(known)), each
