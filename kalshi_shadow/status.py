"""`kalshi-shadow status`: collector health and warehouse table counts at a glance."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from kalshi_shadow.config import Settings
from kalshi_shadow.warehouse.connection import WarehouseLockedError, connect

TABLES = ["spot_ticks", "kalshi_quotes", "kalshi_markets", "kalshi_contracts", "kalshi_edge_snapshots", "kalshi_edges",
          "kalshi_edge_snapshot_scores"]


def main(argv: list[str]) -> int:
    from collectors.health import read_health

    ap = argparse.ArgumentParser(prog="kalshi-shadow status", description=__doc__)
    ap.add_argument("--lock-timeout", type=float, default=20.0, help="seconds to wait for the warehouse lock")
    args = ap.parse_args(argv)
    s = Settings.from_env()
    now = datetime.now(timezone.utc)
    print(f"data dir: {s.data_dir}")
    for name, h in read_health(s.data_dir).items():
        last = h.get("last_message_ts")
        age = f"{(now - datetime.fromisoformat(last)).total_seconds():.0f}s ago" if last else "never"
        print(f"  {name:8s} {h.get('status', '?'):12s} last message {age:>10s}  rows {h.get('rows_acknowledged', 0):>9}  "
              f"reconnects {h.get('reconnects', 0)}  errors {h.get('errors', {})}")
    if not s.db_path.exists():
        print(f"warehouse {s.db_path}: not created yet")
        return 0
    try:
        conn = connect(s.db_path, read_only=True, timeout_seconds=args.lock_timeout)
    except WarehouseLockedError as exc:
        print(f"warehouse: {exc}")
        return 1
    try:
        existing = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        print(f"warehouse {s.db_path}:")
        for t in TABLES:
            if t not in existing:
                continue
            cols = {r[0] for r in conn.execute(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{t}'").fetchall()}
            ts_col = next((c for c in ("ts", "quote_ts", "last_seen_ts", "scored_at") if c in cols), None)
            n, newest = conn.execute(f"SELECT count(*), {'max(' + ts_col + ')' if ts_col else 'NULL'} FROM {t}").fetchone()
            print(f"  {t:28s} {n:>10} rows  newest {newest}")
    finally:
        conn.close()
    return 0
