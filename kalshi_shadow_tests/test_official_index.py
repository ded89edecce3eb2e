"""Issue 16: the official index when keyed, with real processes on loopback.

The simulator serves Kalshi's WebSocket with a signed handshake and the `cfbenchmarks_value` channel (BRTI as
published, its 60-s average, the final-minute average); the index collector records it with a key, the venue
collectors run beside it, and the real Dagster assets load them and price on it. The feed then goes down: pricing
falls back to the proxy and the `official_index_fresh` check fails; the report shows the proxy's basis to it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from collectors.cfbenchmarks import parse_value
from collectors.feed import Malformed
from kalshi_shadow.defs import pricing
from kalshi_shadow.defs.ingest import kalshi_contracts, raw_assets
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.kalshi.auth import KalshiSigner
from kalshi_shadow.monitoring.health import collector_liveness, index_health
from kalshi_shadow.pricing.index import OFFICIAL_STALE_SECONDS
from kalshi_shadow.reports.build import build
from kalshi_shadow.reports.data import Period, collect, duckdb_query
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow_tests.test_collectors import _health, _keyed_platform, _stop
from kalshi_shadow_tests.waiting import wait_for


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_the_feed_sends_the_published_index_and_kalshis_averages(sim: SimHandle) -> None:
    """A message parsed as the collector parses it carries the index as published and both averages, by their
    documented windows: [t - 60 s, t) for `avg_60s_data`, (close - 60 s, t] for the final minute."""
    x = sim.exchange
    close = (int(x.clock.now()) // 900 + 2) * 900  # a quarter-hour close ahead (the index path extends lazily)
    second = close - 10
    row = parse_value(sim.kalshi_ws.value_message(second), _now(), 7)
    assert row["ts"] == datetime.fromtimestamp(second, tz=timezone.utc) and row["value"] == x.published(second)
    prior = [x.published(s) for s in range(second - 60 + 1, second)]
    assert row["avg_60s_ticks"] == 59 and row["avg_60s"] == Decimal(f"{sum(prior) / 59:.8f}")
    window = [x.published(s) for s in range(close - 59, second + 1)]
    assert row["final_minute_ticks"] == 50 and row["final_minute_avg"] == Decimal(f"{sum(window) / 50:.8f}")
    at_close = parse_value(sim.kalshi_ws.value_message(close), _now(), 8)
    assert at_close["final_minute_ticks"] == 60
    assert at_close["final_minute_avg"].quantize(Decimal("0.01")) == x.window_mean(close)  # what a contract settles on
    assert parse_value(sim.kalshi_ws.value_message(close + 1), _now(), 9)["final_minute_avg"] is None  # outside the minute
    for broken in ({"index_id": "BRTI"}, {**sim.kalshi_ws.value_message(second), "data": "{not json"},
                   {**sim.kalshi_ws.value_message(second), "data": json.dumps({"time": second * 1000, "value": "-1"})}):
        with pytest.raises(Malformed):
            parse_value(broken, _now(), None)


def test_the_handshake_must_be_signed_by_the_key(sim: SimHandle, rsa_key: rsa.RSAPrivateKey) -> None:
    path = "/trade-api/ws/v2"

    async def status(headers: dict | None) -> int | None:
        try:
            async with connect(sim.kalshi_ws_url, additional_headers=headers, open_timeout=5) as ws:
                await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["cfbenchmarks_value"], "index_ids": ["BRTI"]}}))
                reply = json.loads(await ws.recv())
                assert reply == {"id": 1, "type": "subscribed", "sid": reply["sid"]}
                value = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert value["type"] == "cfbenchmarks_value" and value["msg"]["index_id"] == "BRTI" and value["seq"] == 1
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert asyncio.run(status(KalshiSigner("test-key", rsa_key).headers("GET", path))) == 101
    assert asyncio.run(status(None)) == 401
    assert asyncio.run(status(KalshiSigner("test-key", other).headers("GET", path))) == 401
    assert asyncio.run(status(KalshiSigner("someone-else", rsa_key).headers("GET", path))) == 401


@pytest.mark.slow
def test_keyed_the_official_index_prices_and_the_proxy_takes_over_when_it_stops(
        sim: SimHandle, rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    key_file = tmp_path / "kalshi.pem"
    key_file.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    keyed = {"KALSHI_API_KEY_ID": "test-key", "KALSHI_PRIVATE_KEY_PATH": str(key_file)}
    procs = _keyed_platform(sim, tmp_path, "collectors.cfbenchmarks", keyed)
    try:
        for name in ("spot", "kraken", "bitstamp", "index", "quotes"):
            wait_for(lambda: _health(tmp_path, name).get("rows_acknowledged", 0) > 3, timeout=30, what=f"{name} rows")
        t1 = _now()
        wait_for(lambda: _now() > t1 + timedelta(seconds=12), timeout=20, what="a stretch with the official index")
        t2 = _now()
        sim.faults(venue_silence={"cfbenchmarks": 25})  # the index feed down; the venues go on
        wait_for(lambda: _now() > t2 + timedelta(seconds=27), timeout=40, what="the index feed's outage")
    finally:
        codes = [_stop(p) for p in procs]
    assert codes == [0, 0, 0, 0, 0]
    assert _health(tmp_path, "index").get("errors", {}).get("malformed", 0) == 0

    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    assert dg.materialize([*raw_assets, kalshi_contracts, pricing.spot_index, pricing.spot_vol], resources={"warehouse": wh}).success
    assert dg.materialize([pricing.kalshi_edge_snapshots], partition_key=_now().date().isoformat(), resources={"warehouse": wh},
                          tags={pricing.LIVE_TAG: "live"}).success

    with utc(duckdb.connect(wh.database, read_only=True)) as conn:
        recorded = conn.execute("SELECT epoch(ts)::BIGINT, value FROM cfb_index_values WHERE index_id = 'BRTI' ORDER BY ts").fetchall()
        assert len(recorded) >= 15 and all(v == sim.exchange.published(s) for s, v in recorded)  # the index as published

        def grid(lo: datetime, hi: datetime) -> list[tuple]:
            return conn.execute("""SELECT epoch(ts)::BIGINT, source, price, official, proxy, n_venues FROM spot_index
                                   WHERE ts >= ? AND ts <= ? ORDER BY ts""", [lo, hi]).fetchall()

        healthy = grid(t1, t2 - timedelta(seconds=1))
        assert len(healthy) >= 10
        for t, source, price, official, proxy, n in healthy:
            # the newest value received by the second: one published a second or so before it
            assert source == "official" and price == official and official in {sim.exchange.published(t - k) for k in range(0, 4)}, t
            assert proxy is not None and n == 3 and abs(float(proxy) / float(official) - 1) < 0.002
        down = grid(t2 + timedelta(seconds=OFFICIAL_STALE_SECONDS + 2), t2 + timedelta(seconds=18))
        assert len(down) >= 8 and all(s == "proxy" and o is None and p == px for _, s, p, o, px, _ in down), down

        def snapshots(lo: datetime, hi: datetime) -> set[str]:
            return {s for (s,) in conn.execute("SELECT DISTINCT index_source FROM kalshi_edge_snapshots WHERE seen_ts >= ? AND seen_ts <= ?",
                                               [lo, hi]).fetchall()}

        assert snapshots(t1 + timedelta(seconds=1), t2 - timedelta(seconds=1)) == {"official"}
        assert snapshots(t2 + timedelta(seconds=OFFICIAL_STALE_SECONDS + 2), t2 + timedelta(seconds=18)) == {"proxy"}

        # Health: the feed stale is found (WARN: the proxy prices; the grid above shows pricing went on, on three venues).
        during = {f.check: f for f in index_health(conn, t2 + timedelta(seconds=25), official=True)}
        assert not during["official_index_fresh"].passed and during["official_index_fresh"].severity == "WARN"
        before = {f.check: f for f in index_health(conn, t2 - timedelta(seconds=1), official=True)}
        assert before["official_index_fresh"].passed
        # The report: seconds by source, and the proxy's basis to the official index.
        report = build(collect(duckdb_query(conn), Period.day(t1.date())))
    alive = {f.check: f for f in collector_liveness(tmp_path, t2, silent_seconds=60)}
    assert "index_collector_alive" in alive
    tables = {b.caption.split(" (")[0].split(",")[0]: b.table for s in report.sections for b in s.blocks if b.kind == "table"}
    basis = tables["The proxy against the official index"].row(0, named=True)
    assert basis["seconds recorded"] >= 10 and basis["seconds paired"] >= 10 and abs(basis["mean basis bp"]) < 20
    sources = dict(tables["Seconds of the index grid by source"].select("source", "seconds").iter_rows())
    assert sources["official"] >= 10 and sources["proxy"] >= 8


def test_without_credentials_the_index_collector_refuses_clearly(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY_PATH")}
    out = subprocess.run([sys.executable, "-m", "collectors.cfbenchmarks", "--data-dir", str(tmp_path), "--seconds", "1"],
                         cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "needs Kalshi credentials" in out.stderr
