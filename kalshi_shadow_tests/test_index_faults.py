"""Issue 16: the index proxy under venue faults, with real processes on loopback.

The simulator serves Coinbase, Kraken, Bitstamp and Kalshi REST on 127.0.0.1; the four collectors run as their own
processes and write raw files; the real Dagster assets load them, build the index grid (with its checks) and price
the quotes. One scenario, in order: Bitstamp trades 1% high (excluded, `venues_agree` fails), Kraken goes silent
(pricing goes on with two venues), then every venue is silent (the grid has no price and quotes get `no_spot`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kalshi_shadow.defs import pricing
from kalshi_shadow.defs.ingest import kalshi_contracts, raw_assets
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.monitoring.health import index_health
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow_tests.test_collectors import REPO, _collector, _health, _stop
from kalshi_shadow_tests.waiting import wait_for

STALE = 10  # KALSHI_SHADOW_VENUE_STALE_SECONDS for this test (30 by default): the same rules, a shorter run


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sleep_until(t: datetime) -> None:
    time.sleep(max(0.0, (t - _now()).total_seconds()))


@pytest.mark.slow
def test_one_venue_wrong_one_silent_then_all_silent(sim: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_VENUE_STALE_SECONDS", str(STALE))
    procs = [
        _collector("collectors.spot", tmp_path, "--url", sim.coinbase_ws_url, "--flush-seconds", "0.5", "--silence-seconds", "5"),
        _collector("collectors.kraken", tmp_path, "--url", sim.kraken_ws_url, "--flush-seconds", "0.5", "--silence-seconds", "5"),
        _collector("collectors.bitstamp", tmp_path, "--url", sim.bitstamp_ws_url, "--flush-seconds", "0.5", "--silence-seconds", "5"),
        _collector("collectors.quotes", tmp_path, "--base-url", sim.kalshi_base_url, "--interval", "1", "--status", "active"),
    ]
    try:
        for name in ("spot", "kraken", "bitstamp", "quotes"):
            wait_for(lambda: _health(tmp_path, name).get("rows_acknowledged", 0) > 3, timeout=30, what=f"{name} rows")
        t1 = _now()
        sim.faults(venue_offset={"bitstamp": 0.01}, venue_silence={"kraken": 2 * STALE + 30})
        _sleep_until(t1 + timedelta(seconds=8))
        sim.faults(venue_offset={"bitstamp": 0.0})
        t3 = t1 + timedelta(seconds=STALE + 15)
        _sleep_until(t3)
        sim.faults(venue_silence={"coinbase": STALE + 15, "bitstamp": STALE + 15})
        _sleep_until(t3 + timedelta(seconds=STALE + 9))
    finally:
        codes = [_stop(p) for p in procs]
    assert codes == [0, 0, 0, 0]

    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    loaded = dg.materialize([*raw_assets, kalshi_contracts, pricing.spot_index, pricing.spot_vol], resources={"warehouse": wh})
    assert loaded.success
    checks = {c.check_name: c for c in loaded.get_asset_check_evaluations() if c.asset_key == dg.AssetKey("spot_index")}
    assert not checks["venues_agree"].passed and checks["venues_agree"].metadata["excluded_venues"].value == "bitstamp"
    assert not checks["index_quorum"].passed
    priced = dg.materialize([pricing.kalshi_edge_snapshots], partition_key=_now().date().isoformat(), resources={"warehouse": wh},
                            tags={pricing.LIVE_TAG: "live"})  # a live run prices every priceable quote, whatever its day
    assert priced.success

    with utc(duckdb.connect(wh.database, read_only=True)) as conn:
        def grid(lo: datetime, hi: datetime) -> list[tuple]:
            return conn.execute("""SELECT ts, source, n_venues, excluded, kraken IS NULL, price IS NULL FROM spot_index
                                   WHERE ts >= ? AND ts <= ? ORDER BY ts""", [lo, hi]).fetchall()

        # Bitstamp 1% high: excluded every second, the median of the other two prices.
        wrong = grid(t1 + timedelta(seconds=3), t1 + timedelta(seconds=7))
        assert len(wrong) >= 4 and all(r[1] == "proxy" and r[2] == 2 and r[3] == ["bitstamp"] for r in wrong), wrong
        # Kraken silent past the stale limit: dropped, and the proxy goes on with Coinbase and Bitstamp.
        one_down = grid(t1 + timedelta(seconds=STALE + 2), t3 + timedelta(seconds=STALE - 2))
        assert len(one_down) > 15 and all(r[1] == "proxy" and r[2] == 2 and r[3] == [] and r[4] for r in one_down), one_down
        # Every venue silent past the limit: no price at all.
        all_down = grid(t3 + timedelta(seconds=STALE + 2), t3 + timedelta(seconds=STALE + 6))
        assert len(all_down) >= 4 and all(r[1] is None and r[2] == 0 and r[5] for r in all_down), all_down

        def snapshots(lo: datetime, hi: datetime) -> list[tuple]:
            return conn.execute("""SELECT index_source, reasons, p_model FROM kalshi_edge_snapshots
                                   WHERE seen_ts >= ? AND seen_ts <= ?""", [lo, hi]).fetchall()

        during_one_down = snapshots(t1 + timedelta(seconds=STALE + 2), t3 + timedelta(seconds=STALE - 2))
        assert during_one_down and all(s[0] == "proxy" and not {"no_spot", "index_degraded"} & set(s[1]) for s in during_one_down)
        during_all_down = snapshots(t3 + timedelta(seconds=STALE + 2), t3 + timedelta(seconds=STALE + 6))
        assert during_all_down and all("no_spot" in s[1] and s[2] is None for s in during_all_down), during_all_down

        # The health checks that alert: no quorum (ERROR) and Bitstamp excluded (WARN) within their window.
        newest = conn.execute("SELECT max(ts) FROM spot_index").fetchall()[0][0]
        found = {f.check: f for f in index_health(conn, newest + timedelta(seconds=1))}
    assert not found["index_quorum"].passed and found["index_quorum"].severity == "ERROR"
    assert not found["venues_agree"].passed and found["venues_agree"].metadata["excluded_venues"] == "bitstamp"
    # index_fresh alerts only past the stale setting (3 min by default); here the newest trade behind it is ~40 s old.
    assert found["index_fresh"].metadata["newest_trade_age_seconds"] > STALE

    # `status` lists every venue, and says the index has no price.
    env = {**os.environ, "KALSHI_SHADOW_DATA_DIR": str(tmp_path), "DB_PATH": wh.database}
    out = subprocess.run([sys.executable, "-m", "kalshi_shadow.cli", "status", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    index = json.loads(out.stdout)["warehouse"]["index"]
    assert index["price"] is None and index["source"] is None
    assert {v: d["state"] for v, d in index["venues"].items()} == {"coinbase": "stale", "kraken": "stale", "bitstamp": "stale"}
    assert set(json.loads(out.stdout)["collectors"]) >= {"spot", "kraken", "bitstamp", "quotes"}
