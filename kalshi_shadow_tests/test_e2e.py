"""`kalshi-shadow up` end to end: simulator, collectors, Dagster daemon; the warehouse fills while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from kalshi_shadow.supervisor import free_ports
from kalshi_shadow.warehouse.connection import WarehouseLockedError, connect

REPO = Path(__file__).parents[1]
SERIES = {"KXBTC15M", "KXBTCD", "KXBTC"}


def _series_counts(db: Path) -> dict[str, set[str]]:
    """Which series have rows per table, read with the plain duckdb package while the platform runs."""
    try:
        conn = connect(db, read_only=True, timeout_seconds=20)
    except (WarehouseLockedError, duckdb.Error):
        return {}
    try:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not {"spot_ticks", "kalshi_quotes", "kalshi_contracts", "kalshi_edge_snapshots"} <= tables:
            return {}
        lag = conn.execute("SELECT max(epoch(created_at) - epoch(quote_ts)) FROM kalshi_edge_snapshots").fetchall()[0][0]
        return {
            "kalshi_edge_snapshots": {r[0] for r in conn.execute("SELECT DISTINCT series_ticker FROM kalshi_edge_snapshots").fetchall()},
            "max_snapshot_lag_seconds": lag,
            "spot_ticks": {"BTC-USD"} if conn.execute("SELECT count(*) FROM spot_ticks").fetchone()[0] else set(),
            "kalshi_quotes": {r[0] for r in conn.execute("SELECT DISTINCT series_ticker FROM kalshi_quotes").fetchall()},
            "kalshi_contracts": {r[0] for r in conn.execute("SELECT DISTINCT series_ticker FROM kalshi_contracts").fetchall()},
        }
    finally:
        conn.close()


@pytest.mark.slow
def test_up_fills_the_warehouse_and_prices_quotes_while_running(tmp_path: Path) -> None:
    env = {**os.environ, "KALSHI_SHADOW_TICK_SECONDS": "5", "KALSHI_SHADOW_DATA_DIR": str(tmp_path)}
    for k in ("KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY_PATH", "DB_PATH", "LOG_PATH"):
        env.pop(k, None)
    ports = free_ports(6)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kalshi_shadow.cli", "up", "--fast-clock", "--dagster-port", str(ports[0]),
         "--kalshi-port", str(ports[1]), "--coinbase-port", str(ports[2]),
         "--kraken-port", str(ports[3]), "--bitstamp-port", str(ports[4]), "--kalshi-ws-port", str(ports[5])],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = tmp_path / "warehouse.duckdb"
    seen: dict[str, set[str]] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, "kalshi-shadow up exited early"
            seen = _series_counts(db) if db.exists() else {}
            if seen and seen["spot_ticks"] and all(seen[t] >= SERIES for t in ("kalshi_quotes", "kalshi_contracts", "kalshi_edge_snapshots")):
                break
            time.sleep(5)
        assert seen.get("kalshi_edge_snapshots", set()) >= SERIES, seen
        assert seen["max_snapshot_lag_seconds"] < 90, seen
        assert seen.get("kalshi_quotes", set()) >= SERIES and seen.get("kalshi_contracts", set()) >= SERIES and seen["spot_ticks"], (
            seen, (tmp_path / "logs" / "dagster-daemon.log").read_text()[-3000:] if (tmp_path / "logs" / "dagster-daemon.log").exists() else "")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "all stopped" in out
