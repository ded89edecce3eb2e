"""`kalshi-shadow bench`: snapshot throughput and incremental-run cost, printed as figures (not a test).

1. Throughput: a day of synthetic quotes (hourly KXBTCD + KXBTC ladders and KXBTC15M, every --quote-every s)
   snapshotted in one full run: rows/second.
2. Incremental cost: with 1 day and with --history-days of snapshots already in the warehouse, the time of one
   live run that prices the next 5 minutes of quotes. It should not grow with history.
Everything runs in a temporary DuckDB file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from kalshi_shadow.pricing.snapshots import compute_snapshots, refresh_spot_vol
from kalshi_shadow.pricing.synthetic import generate, publish_until
from kalshi_shadow.warehouse.ddl import ensure_schema

START = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _fresh(path: Path, hours: int, strikes: int, quote_every: int) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(str(path))
    ensure_schema(conn)
    generate(conn, START, hours, strikes=strikes, quote_every=quote_every)
    return conn


def _incremental_run(conn: duckdb.DuckDBPyConnection, history_end: datetime) -> tuple[float, int]:
    """Publish 5 more minutes of data and time one live run (vol grid + snapshots)."""
    publish_until(conn, history_end + timedelta(minutes=5), load_id=2)
    t = time.perf_counter()
    refresh_spot_vol(conn)
    run = compute_snapshots(conn, (history_end + timedelta(minutes=4)).date(), full=False, lot=100)
    return time.perf_counter() - t, run.rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strikes", type=int, default=50, help="markets per hourly ladder (two ladders + four 15M per hour)")
    ap.add_argument("--quote-every", type=int, default=5, help="seconds between quotes of a market")
    ap.add_argument("--history-days", type=int, default=30)
    ap.add_argument("--history-quote-every", type=int, default=60, help="quote spacing of the synthetic history (to keep it generable on 2 cores)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kalshi-shadow-bench-") as tmp:
        conn = _fresh(Path(tmp) / "day.duckdb", 24, args.strikes, args.quote_every)
        publish_until(conn, START + timedelta(days=1), load_id=1)
        quotes = conn.execute("SELECT count(*) FROM kalshi_quotes").fetchall()[0][0]
        t = time.perf_counter()
        refresh_spot_vol(conn)
        run = compute_snapshots(conn, START.date(), full=True, lot=100)
        secs = time.perf_counter() - t
        print(f"throughput: {quotes:,} quotes -> {run.rows:,} snapshot rows (2 models) in {secs:.1f} s = {run.rows / secs:,.0f} rows/s")
        conn.close()

        for days, spacing in ((1, args.quote_every), (args.history_days, args.history_quote_every)):
            conn = _fresh(Path(tmp) / f"hist{days}.duckdb", 24 * days, args.strikes, spacing)
            end = START + timedelta(days=days)
            publish_until(conn, end, load_id=1)
            refresh_spot_vol(conn)
            for d in range(days):
                compute_snapshots(conn, (START + timedelta(days=d)).date(), full=False, lot=100)
            history = conn.execute("SELECT count(*) FROM kalshi_edge_snapshots").fetchall()[0][0]
            # The next 5 minutes arrive at the live quote spacing, whatever the history's.
            generate(conn, end, 1, strikes=args.strikes, quote_every=args.quote_every)
            elapsed, rows = _incremental_run(conn, end)
            print(f"incremental run with {days:>2} day(s) of history ({history:,} snapshot rows behind it): "
                  f"{elapsed:.2f} s for {rows:,} new rows")
            conn.close()
    return 0
