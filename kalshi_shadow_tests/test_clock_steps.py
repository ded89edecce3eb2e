"""Issue 15, item 6: a wall clock that steps backwards (NTP after a bad boot) does not stop pricing; it is detected,
logged and counted. Real raw files written by RawWriter with a clock that steps back an hour, the real loader,
frontier, pricing, live sensor and health check on a DuckDB file."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kalshi_shadow.defs import live
from kalshi_shadow.monitoring.health import clock_steps
from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
from kalshi_shadow.raw import RawWriter
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.contracts import refresh_contracts
from kalshi_shadow.warehouse.ddl import ensure_schema
from kalshi_shadow.warehouse.frontier import pricing_frontier
from kalshi_shadow.warehouse.loader import load_new_files
from kalshi_shadow.models import model_names

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
STEP = timedelta(hours=1)
TICKER = "KXBTCD-26DEC0317-T94999.99"


class SteppingClock:
    """Wall time that a test moves by hand, forwards or (once) back."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def _rows(now: datetime) -> dict[str, list[dict]]:
    """What the collectors see in one 5-s cycle at wall time `now`: trades, a two-sided book, terms and fees."""
    return {
        "spot_ticks": [{"ts": now - timedelta(seconds=s), "received_ts": now - timedelta(seconds=s), "product_id": "BTC-USD",
                        "trade_id": int(now.timestamp() * 10) - s, "price": Decimal("95000") + s} for s in range(5)],
        **{table: [{"ts": now - timedelta(seconds=s), "received_ts": now - timedelta(seconds=s), "symbol": "BTC/USD",
                    "trade_id": int(now.timestamp() * 10) - s, "price": Decimal("95001") + s, "size": Decimal("0.01"),
                    "side": "buy"} for s in range(5)] for table in ("kraken_trades", "bitstamp_trades")},
        "kalshi_quotes": [{"ts": now - timedelta(milliseconds=200), "received_ts": now, "ticker": TICKER, "event_ticker": TICKER[:-10],
                           "series_ticker": "KXBTCD", "status": "active", "yes_bid": Decimal("0.48"), "yes_ask": Decimal("0.50"),
                           "no_bid": Decimal("0.50"), "no_ask": Decimal("0.52"), "yes_bid_size": Decimal(100),
                           "yes_ask_size": Decimal(100), "source": "rest_markets"}],
        "kalshi_markets": [{"ts": now, "ticker": TICKER, "event_ticker": TICKER[:-10], "series_ticker": "KXBTCD",
                            "market_type": "binary", "status": "active", "strike_type": "greater", "floor_strike": 94999.99,
                            "open_time": T0 - 2 * STEP, "close_time": T0 + 3 * STEP, "raw_json": "{}"}],
        "kalshi_series": [{"ts": now, "series_ticker": "KXBTCD", "fee_type": "quadratic", "fee_multiplier": 1.0,
                           "raw_json": "{}", "effective_ts": now}],
    }


@pytest.fixture
def setup(tmp_path: Path):
    clock = SteppingClock(T0)
    raw = tmp_path / "raw"
    writers = {t: RawWriter(raw, t, writer_id=f"w{t[-5:]}", clock=clock, flush_rows=10**6, flush_seconds=1e9) for t in _rows(T0)}
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)

    def cycle() -> None:
        for t, rows in _rows(clock.t).items():
            writers[t].extend(rows)
            assert writers[t].flush(heartbeat=True) is not None

    def tick() -> tuple[int, str | None]:
        for t in writers:
            load_new_files(conn, raw, t, now=clock.t)
        refresh_contracts(conn)
        refresh_spot(conn)
        run = price_new_quotes(conn, lot=100)
        return run.quotes, run.held_back

    yield clock, cycle, tick, conn, raw
    conn.close()


def test_a_clock_that_steps_back_is_counted_and_pricing_goes_on(setup, caplog: pytest.LogCaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock, cycle, tick, conn, raw = setup
    for _ in range(3):  # three cycles before the step
        cycle()
        clock.t += timedelta(seconds=5)
    priced, held = tick()
    assert priced == 3 and held is None
    before, _ = pricing_frontier(conn)

    clock.t -= STEP  # NTP: the clock was an hour fast
    sensor_cursor = json.dumps(live.raw_signature(raw))
    for _ in range(3):
        cycle()
        clock.t += timedelta(seconds=5)
    # The live sensor sees the new files although their names sort before the old ones.
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(raw.parent))
    monkeypatch.setenv("KALSHI_SHADOW_INLINE_RUNS", "0")  # the tick below runs the job itself
    ctx = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=sensor_cursor)
    assert isinstance(live.live_tick_sensor(ctx), dg.RunRequest)

    with caplog.at_level("WARNING"):
        priced, held = tick()
    assert held is None and priced == 3  # the quotes seen "an hour ago" are priced, not held back
    after, _ = pricing_frontier(conn)
    assert after == before  # no input's frontier went back
    # The post-step quotes, every model's rows, get their snapshots with the terms they saw. The index grid is written once
    # per second and never rewritten (pricing/index.py), and this warehouse has no index, vol grid or fee schedule
    # for the hour the clock now says it is (a platform that ran then has them): those rows say so in their reasons.
    post = conn.execute("SELECT strike_type IS NOT NULL, spot, reasons FROM kalshi_edge_snapshots WHERE seen_ts < ?",
                        [T0]).fetchall()
    assert len(post) == 3 * len(model_names()) and all(found and spot is None for found, spot, _ in post)
    assert all("no_spot" in reasons and "no_market_terms" not in reasons for _, _, reasons in post)
    steps = conn.execute("SELECT table_name, seq, round(step_seconds) FROM raw_clock_steps ORDER BY 1").fetchall()
    assert steps == [(t, 4, pytest.approx(STEP.total_seconds() - 5, abs=1)) for t in
                     ("bitstamp_trades", "kalshi_markets", "kalshi_quotes", "kalshi_series", "kraken_trades", "spot_ticks")]
    assert "the clock stepped back" in caplog.text
    [finding] = clock_steps(conn, datetime.now(timezone.utc))
    assert not finding.passed and finding.severity == "WARN" and finding.metadata["steps_last_day"] == 6

    # Once the clock has passed the old frontier, files are in order again: nothing more is recorded.
    clock.t = before + timedelta(seconds=5)
    cycle()
    tick()
    assert conn.execute("SELECT count(*) FROM raw_clock_steps").fetchall()[0][0] == 6
    assert pricing_frontier(conn)[0] > before
