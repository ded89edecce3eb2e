"""Issue 8: measurements that hold on the real exchanges. Quote times as seen, stale inputs unpriced and unscored,
vol that knows about feed gaps, the settlement average on the one-second grid, fees in force at the quote's time,
and model and mid compared on the same rows. Real DuckDB files, the real simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import polars as pl
import pytest

from collectors.quotes import QuotePoller
from kalshi_shadow.defs import ingest
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.pricing.fees import order_fee
from kalshi_shadow.pricing.snapshots import insert_wide_snapshots
from kalshi_shadow.pricing.rules import RULES
from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
from kalshi_shadow.pricing.synthetic import generate, publish_until
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.ddl import ensure_schema

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
GAP = (START + timedelta(minutes=40), START + timedelta(minutes=50))  # ten minutes without a trade at any venue
VENUE_STAGING = ("syn_spot", "syn_kraken", "syn_bitstamp")


def _priced(tmp_path: Path, hours: int = 1, *, gap: bool = False, edit_sql: str | None = None) -> duckdb.DuckDBPyConnection:
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)
    generate(conn, START, hours, strikes=6, quote_every=10)
    if gap:
        for table in VENUE_STAGING:
            conn.execute(f"DELETE FROM {table} WHERE ts >= ? AND ts < ?", list(GAP))
    if edit_sql:
        conn.execute(edit_sql)
    publish_until(conn, START + timedelta(hours=hours), load_id=1)
    refresh_spot(conn)
    price_new_quotes(conn, lot=100)
    return conn


def test_a_spot_gap_is_stale_spot_and_vol_gap_not_a_floor_vol(tmp_path: Path) -> None:
    conn = _priced(tmp_path, hours=2, gap=True)
    # Quotes seen in the gap, once every venue's last trade is older than the index's bound: no index, never priced.
    from kalshi_shadow.pricing.index import VENUE_STALE_SECONDS

    stale = conn.execute("""SELECT count(*), count(p_model), bool_and(list_contains(reasons, 'no_spot'))
                            FROM kalshi_edge_snapshots WHERE quote_ts > ? AND quote_ts < ?""",
                         [GAP[0] + timedelta(seconds=VENUE_STALE_SECONDS + 1), GAP[1]]).fetchall()[0]
    assert stale[0] > 0 and stale[1] == 0 and stale[2]
    # The grid holds the EWMA through the gap (no zero returns) and flags the points whose minute spans it.
    grid = conn.sql("SELECT grid_ts, gap_seconds, log_return, vol FROM spot_vol ORDER BY grid_ts").pl()
    inside = grid.filter((pl.col("grid_ts") > GAP[0] + timedelta(minutes=1)) & (pl.col("grid_ts") < GAP[1]))
    assert inside.height >= 8 and inside["log_return"].null_count() == inside.height
    assert (inside["gap_seconds"] > RULES.max_vol_gap_seconds).all()
    before = grid.filter(pl.col("grid_ts") == GAP[0])["vol"][0]
    assert inside["vol"].n_unique() == 1 and inside["vol"][0] == pytest.approx(before)
    after = grid.filter(pl.col("grid_ts") == GAP[1])  # the first tick after the gap lands on this minute
    assert after["gap_seconds"][0] > RULES.max_vol_gap_seconds and after["log_return"][0] is not None
    assert 0.5 < after["vol"][0] / before < 2.0  # one scaled observation, not a spike
    assert grid.filter(pl.col("grid_ts") > GAP[1] + timedelta(minutes=2))["gap_seconds"].max() < 60
    # A quote seen in a minute whose vol point spans the gap carries vol_gap and no p_model, even with fresh spot.
    flagged = conn.execute("""SELECT count(*), count(p_model) FROM kalshi_edge_snapshots
                              WHERE list_contains(reasons, 'vol_gap') AND NOT list_contains(reasons, 'no_spot')""").fetchall()[0]
    assert flagged[0] > 0 and flagged[1] == 0
    assert conn.execute("SELECT count(*) FROM kalshi_edge_snapshots WHERE quote_ts > ? AND list_contains(reasons, 'vol_gap')",
                        [GAP[1] + timedelta(minutes=2)]).fetchall()[0][0] == 0


def test_stale_rows_are_in_no_score_average_and_model_and_mid_share_rows(tmp_path: Path) -> None:
    conn = _priced(tmp_path, hours=2, gap=True)
    conn.execute("""INSERT INTO kalshi_contracts (ticker, series_ticker, event_ticker, outcome, settlement_value)
                    SELECT DISTINCT ticker, series_ticker, event_ticker, CASE WHEN hash(ticker) % 2 = 0 THEN 'yes' ELSE 'no' END,
                           CASE WHEN hash(ticker) % 2 = 0 THEN 1 ELSE 0 END FROM kalshi_edge_snapshots""")
    stale = conn.execute("""SELECT count(*), count(*) FILTER (WHERE x.excluded_reason = 'model_unpriced'), count(x.brier_model)
                            FROM kalshi_edge_snapshots AS s JOIN kalshi_edge_snapshot_scores AS x USING (snapshot_id)
                            WHERE list_contains(s.reasons, 'no_spot')""").fetchall()[0]
    assert stale[0] > 0 and stale[1] == stale[0] and stale[2] == 0
    paired, model, mid = conn.execute("""SELECT count(*), avg(brier_model), avg(brier_mid) FROM kalshi_edge_snapshot_scores
                                         WHERE p_model IS NOT NULL AND p_mid IS NOT NULL""").fetchall()[0]
    summary = conn.execute("""SELECT sum(n_paired), sum(n_paired * brier_model) / sum(n_paired), sum(n_paired * brier_mid) / sum(n_paired),
                                     sum(n_one_sided) FROM kalshi_score_summary""").fetchall()[0]
    assert summary[0] == paired > 0 and summary[1] == pytest.approx(model) and summary[2] == pytest.approx(mid)
    assert summary[3] > 0  # the synthetic books are sometimes one-sided: counted, kept out of the comparison


def test_unpaired_averaging_would_flip_the_verdict_the_summary_does_not(tmp_path: Path) -> None:
    """10 paired rows where the mid (0.8) beats the model (0.7) on YES outcomes, and 100 one-sided rows the model
    calls easily (0.01 on NO outcomes). Averaging each side over its own rows says the model wins; it does not."""
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)
    conn.execute("""INSERT INTO kalshi_contracts (ticker, series_ticker, event_ticker, outcome, settlement_value)
                    VALUES ('YES-1', 'KXBTCD', 'E', 'yes', 1), ('NO-1', 'KXBTCD', 'E', 'no', 0)""")
    insert_wide_snapshots(conn, """
        INSERT INTO kalshi_edge_snapshots (quote_key, quote_date, ticker, series_ticker, event_ticker, model_version,
            quote_ts, created_at, lot_size, p_model, p_mid, reasons, rules_version, tau_seconds)
        SELECT uuid(), ?::DATE, ticker, 'KXBTCD', 'E', 'avg60-v1', ?::TIMESTAMPTZ + to_seconds(i), now(), 100, p_model, p_mid, [], 't', 600
        FROM (SELECT 'YES-1' AS ticker, 0.7 AS p_model, 0.8 AS p_mid, i FROM range(10) AS r(i)
              UNION ALL SELECT 'NO-1', 0.01, NULL, i FROM range(100) AS r(i))""", [START.date(), START])
    unpaired_model, unpaired_mid = conn.execute("SELECT avg(brier_model), avg(brier_mid) FROM kalshi_edge_snapshot_scores").fetchall()[0]
    assert unpaired_model < unpaired_mid  # the misleading comparison
    n, model, mid, skill, one_sided, model_all, n_model = conn.execute(
        """SELECT n_paired, brier_model, brier_mid, brier_skill_vs_mid, n_one_sided, brier_model_all, n_model_priced
           FROM kalshi_score_summary""").fetchall()[0]
    assert (n, one_sided, n_model) == (10, 100, 110)
    assert model == pytest.approx(0.09) and mid == pytest.approx(0.04) and skill == pytest.approx(1 - 0.09 / 0.04)
    assert model > mid and skill < 0  # the market wins on the rows both priced
    assert model_all == pytest.approx(unpaired_model)


def _index_value(trades: list[list[tuple[float, float]]], t: int) -> float | None:
    """The index proxy's rules by hand: each venue's last price received at or before t, if at most
    VENUE_STALE_SECONDS old; the median of those within MAX_DEVIATION_BP of their median."""
    from statistics import median

    from kalshi_shadow.pricing.index import MAX_DEVIATION_BP, VENUE_STALE_SECONDS

    fresh = []
    for venue in trades:
        last = [(rec, p) for rec, p in venue if rec <= t]
        if last and t - last[-1][0] <= VENUE_STALE_SECONDS:
            fresh.append(last[-1][1])
    if not fresh:
        return None
    m = median(fresh)
    return median([p for p in fresh if abs(p / m - 1) * 1e4 <= MAX_DEVIATION_BP])


def test_window_mean_is_the_mean_of_the_one_second_grid_so_far(tmp_path: Path) -> None:
    # Irregular trades at every venue: a third of the seconds have none, the rest land somewhere inside their second.
    conn = _priced(tmp_path, edit_sql="".join(f"""
        DELETE FROM {t} WHERE hash(trade_id) % 3 = 0;
        UPDATE {t} SET ts = date_trunc('second', ts) + to_milliseconds(hash(trade_id) % 997),
                       received_ts = date_trunc('second', ts) + to_milliseconds(hash(trade_id) % 997 + 50);""" for t in VENUE_STAGING))
    trades = [conn.execute(f"SELECT epoch(received_ts), price::DOUBLE FROM {t} ORDER BY received_ts").fetchall()
              for t in ("spot_ticks", "kraken_trades", "bitstamp_trades")]
    rows = conn.execute("""SELECT epoch(quote_ts), epoch(close_ts), epoch(quote_ts + to_seconds(quote_age_seconds)), window_mean
                           FROM kalshi_edge_snapshots WHERE tau_seconds > 0 AND tau_seconds < 60 AND model_version = 'avg60-v1'""").fetchall()
    assert len(rows) > 10
    for quote_ts, close_ts, seen, window_mean in rows:
        # The seconds of (close - 60, close] elapsed by the quote's time and its seen time, each as known by then.
        values = [v for t in range(int(close_ts) - 59, int(math.floor(min(close_ts, quote_ts, seen))) + 1)
                  if (v := _index_value(trades, t)) is not None]
        assert window_mean == pytest.approx(sum(values) / len(values), rel=1e-12)
    trade_mean_differs = conn.execute("""
        SELECT count(*) FILTER (WHERE abs(window_mean - (SELECT avg(price::DOUBLE) FROM spot_ticks AS s
                                                         WHERE s.ts > e.close_ts - INTERVAL 60 SECOND AND s.ts <= e.quote_ts)) > 1e-6)
        FROM kalshi_edge_snapshots AS e WHERE window_mean IS NOT NULL""").fetchall()[0][0]
    assert trade_mean_differs > 0  # the old definition (mean of Coinbase trades) really is a different number here


def test_a_late_quote_is_quote_stale_and_unpriced(tmp_path: Path) -> None:
    conn = _priced(tmp_path, edit_sql=f"""
        UPDATE syn_quotes SET received_ts = ts + INTERVAL {int(RULES.max_quote_age_seconds) + 5} SECOND
        WHERE ticker LIKE 'KXBTCD-H0-%' AND extract(minute FROM ts) = 20""")
    late = conn.execute("""SELECT count(*), count(p_model), bool_and(list_contains(reasons, 'quote_stale')), min(quote_age_seconds)
                           FROM kalshi_edge_snapshots WHERE ticker LIKE 'KXBTCD-H0-%' AND extract(minute FROM quote_ts) = 20""").fetchall()[0]
    assert late[0] > 0 and late[1] == 0 and late[2] and late[3] == RULES.max_quote_age_seconds + 5
    assert conn.execute("SELECT count(*) FROM kalshi_edge_snapshots WHERE list_contains(reasons, 'quote_stale') "
                        "AND NOT (ticker LIKE 'KXBTCD-H0-%' AND extract(minute FROM quote_ts) = 20)").fetchall()[0][0] == 0


def test_a_slow_page_gives_its_markets_a_real_quote_age(manual_sim: SimHandle, tmp_path: Path) -> None:
    client = KalshiClient(manual_sim.kalshi_base_url, reads_per_second=500)
    n = len(list(client.iter_markets(series_ticker="KXBTC", status="open")))
    poller = QuotePoller(KalshiClient(manual_sim.kalshi_base_url, reads_per_second=500), ["KXBTCD", "KXBTC"], tmp_path)
    poller._refresh_series()  # series and fee reads done first, so the next slow answer is a markets page
    poller.series = ["KXBTCD"]
    poller.poll_once()
    # KXBTC's markets fit one page (limit 1000): held back 1.5 s after the exchange read the book (the cycle's
    # exchange status, read first, is held back too).
    httpx.post(manual_sim.kalshi_base_url.split("/trade-api")[0] + "/_sim/faults", json={"slow_pages": 2, "slow_page_seconds": 1.5})
    poller.series = ["KXBTC"]
    poller.poll_once()
    poller.flush()
    quotes = pl.read_parquet(str(tmp_path / "raw" / "kalshi_quotes" / "**" / "*.parquet"))
    age = quotes.with_columns(((pl.col("received_ts") - pl.col("ts")).dt.total_milliseconds() / 1000).alias("age"))
    slow = age.filter(pl.col("series_ticker") == "KXBTC")
    assert slow.height == n > 0 and slow["age"].min() >= 1.5
    assert age.filter(pl.col("series_ticker") == "KXBTCD")["age"].max() < 1.0


def test_a_fee_change_applies_from_its_time(tmp_path: Path) -> None:
    change_at = START + timedelta(minutes=30)
    conn = _priced(tmp_path, edit_sql=f"""
        INSERT INTO kalshi_series (ts, series_ticker, fee_type, fee_multiplier, effective_ts, fee_change_id, load_id)
        VALUES ('{(START - timedelta(minutes=10)).isoformat()}', 'KXBTCD', 'quadratic', 1.0, NULL, NULL, 0),
               ('{(START - timedelta(minutes=5)).isoformat()}', 'KXBTCD', 'quadratic', 2.0, '{change_at.isoformat()}', 'fc-1', 0)""")
    by_side = conn.execute("""SELECT quote_ts >= ? AS after, min(fee_multiplier), max(fee_multiplier)
                              FROM kalshi_edge_snapshots WHERE series_ticker = 'KXBTCD' GROUP BY 1 ORDER BY 1""", [change_at]).fetchall()
    assert by_side == [(False, 1.0, 1.0), (True, 2.0, 2.0)]
    fees = conn.execute("""SELECT DISTINCT yes_ask, fee_multiplier, fee_yes FROM kalshi_edge_snapshots
                           WHERE series_ticker = 'KXBTCD' AND yes_ask IS NOT NULL""").fetchall()
    assert {m for _, m, _ in fees} == {1.0, 2.0}
    for ask, mult, fee_yes in fees:  # per order of lot_size contracts, rounded up to the cent, then per contract
        assert fee_yes == pytest.approx(float(order_fee(ask, 100, "quadratic", mult)) / 100, abs=1e-12)
    assert conn.execute("SELECT DISTINCT fee_multiplier FROM kalshi_edge_snapshots WHERE series_ticker = 'KXBTC'").fetchall() == [(1.0,)]


def test_a_scheduled_fee_change_is_read_recorded_and_warned(manual_sim: SimHandle, tmp_path: Path) -> None:
    at = int(time.time()) + 3600  # an hour ahead of the wall clock, which stamps the poller's rows
    r = httpx.post(manual_sim.kalshi_base_url.split("/trade-api")[0] + "/_sim/fee_changes",
                   json={"series_ticker": "KXBTCD", "fee_type": "quadratic", "fee_multiplier": 1.5, "scheduled_ts": at})
    assert r.status_code == 200
    poller = QuotePoller(KalshiClient(manual_sim.kalshi_base_url, reads_per_second=500), ["KXBTCD", "KXBTC"], tmp_path)
    poller.poll_once()
    poller.flush()
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    result = dg.materialize([a for a in ingest.raw_assets if a.key.path == ["kalshi_series"]], resources={"warehouse": wh})
    assert result.success
    with utc(duckdb.connect(wh.database)) as conn:
        rows = conn.execute("""SELECT series_ticker, fee_multiplier, epoch(effective_ts)::BIGINT, fee_change_id FROM kalshi_series
                               WHERE fee_change_id IS NOT NULL""").fetchall()
    assert rows == [("KXBTCD", 1.5, at, "fc-1")]
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "fee_schedule_unchanged")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["changes"].value[0]["after"] == "quadratic x1.5"
