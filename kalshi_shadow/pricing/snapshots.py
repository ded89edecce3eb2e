"""Edge snapshots: every quote priced by every model, with all its inputs, point in time.

Inputs per quote come from ASOF joins at the quote's own timestamp: the last spot trade at or before it, the vol
grid point at or before it, the market terms (strike, close time) and the series fees as known then. Only quotes
at or before the spot watermark (newest loaded trade) are processed, so a trade loaded later cannot make a live
row differ from a recompute. Live runs add the quotes of a UTC day not yet snapshotted; a full run (backfill)
deletes and recomputes the day; both give the same rows (created_at aside).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import duckdb
import numpy as np
import polars as pl

from kalshi_shadow.pricing.fees import FEE_MACRO_SQL
from kalshi_shadow.pricing.probability import MODELS, prob_yes
from kalshi_shadow.pricing.rules import RULES, Rules
from kalshi_shadow.pricing.vol import VolState, ewma_vol, initial_state

LOOKBACK = timedelta(minutes=10)  # live runs re-examine this much before their watermark for late-loaded quotes


def _frame(conn: duckdb.DuckDBPyConnection, sql: str, params: dict) -> pl.DataFrame:
    return pl.from_arrow(conn.sql(sql, params=params).to_arrow_table())


def spot_watermark(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    return conn.execute("SELECT max(ts) FROM spot_ticks WHERE product_id = 'BTC-USD'").fetchall()[0][0]


def refresh_spot_vol(conn: duckdb.DuckDBPyConnection) -> int:
    """Extend the one-minute vol grid up to the spot watermark; returns rows added."""
    wm = spot_watermark(conn)
    if wm is None:
        return 0
    last = next(iter(conn.execute("SELECT grid_ts, price, var_per_minute FROM spot_vol ORDER BY grid_ts DESC LIMIT 1").fetchall()), None)
    if last:
        start, state = last[0] + timedelta(minutes=1), VolState(last[1], last[2])
    else:
        first_ts, first_px = conn.execute(
            "SELECT ts, price::DOUBLE FROM spot_ticks WHERE product_id = 'BTC-USD' ORDER BY ts LIMIT 1").fetchall()[0]
        start = (first_ts + timedelta(minutes=1)).replace(second=0, microsecond=0)
        state = initial_state(first_px)
    end = wm.replace(second=0, microsecond=0)
    if end < start:
        return 0
    grid = _frame(conn, """
        WITH grid AS (SELECT unnest(generate_series($start::TIMESTAMPTZ, $end::TIMESTAMPTZ, INTERVAL 1 MINUTE)) AS grid_ts),
             ticks AS (SELECT ts, price::DOUBLE AS price FROM spot_ticks
                       WHERE product_id = 'BTC-USD' AND ts > $start::TIMESTAMPTZ - INTERVAL 1 DAY AND ts <= $end::TIMESTAMPTZ)
        SELECT g.grid_ts, t.price FROM grid AS g ASOF LEFT JOIN ticks AS t ON g.grid_ts >= t.ts ORDER BY g.grid_ts
    """, {"start": start, "end": end})
    prices = grid["price"].fill_null(strategy="forward").fill_null(state.last_price).to_numpy()
    rets, var, vol, _ = ewma_vol(prices, state)
    # The EWMA state is stored per row so the next run resumes exactly where this one ended.
    out = pl.DataFrame({"grid_ts": grid["grid_ts"], "price": prices, "log_return": rets, "var_per_minute": var, "vol": vol})
    conn.register("_vol_rows", out)
    try:
        conn.execute("INSERT INTO spot_vol BY NAME SELECT * FROM _vol_rows")
    finally:
        conn.unregister("_vol_rows")
    return out.height


BASE_SQL = """
WITH q AS (
    SELECT q.* FROM kalshi_quotes AS q
    WHERE q.ts >= $day_start AND q.ts < $day_end AND q.ts > $from_ts AND q.ts <= $spot_wm
      AND NOT EXISTS (SELECT 1 FROM kalshi_edge_snapshots AS e
                      WHERE e.quote_date = $day AND e.quote_ts > $from_ts AND e.ticker = q.ticker
                        AND e.quote_ts = q.ts AND e.quote_source IS NOT DISTINCT FROM q.source)
), markets AS (
    SELECT ticker, ts, strike_type, floor_strike, cap_strike, close_time FROM kalshi_markets
    WHERE ts <= $spot_wm AND ts > $from_ts - INTERVAL 2 DAY
), spot AS (
    SELECT ts, price::DOUBLE AS price FROM spot_ticks
    WHERE product_id = 'BTC-USD' AND ts > $from_ts - INTERVAL 1 HOUR AND ts <= $spot_wm
), vol AS (
    SELECT grid_ts, vol FROM spot_vol WHERE grid_ts > $from_ts - INTERVAL 1 HOUR
), priced AS (
    SELECT q.*, m.strike_type, m.floor_strike, m.cap_strike, m.close_time, s.ts AS spot_ts, s.price AS spot, v.vol,
           se.fee_type, se.fee_multiplier
    FROM q
    ASOF LEFT JOIN markets AS m ON q.ticker = m.ticker AND q.ts >= m.ts
    ASOF LEFT JOIN spot AS s ON q.ts >= s.ts
    ASOF LEFT JOIN vol AS v ON q.ts >= v.grid_ts
    ASOF LEFT JOIN kalshi_series AS se ON q.series_ticker = se.series_ticker AND q.ts >= se.ts
), in_window AS (  -- mean spot so far inside the settlement window, for quotes in the last 60 s
    SELECT p.ticker, p.ts, p.source, avg(s.price) AS window_mean
    FROM priced AS p JOIN spot AS s ON s.ts > p.close_time - INTERVAL 60 SECOND AND s.ts <= p.ts
    WHERE p.close_time - p.ts < INTERVAL 60 SECOND
    GROUP BY ALL
)
SELECT
    p.ts AS quote_ts, CAST(p.ts AS DATE) AS quote_date, p.ticker, p.series_ticker, p.event_ticker,
    p.source AS quote_source, p.status, p.strike_type, p.floor_strike, p.cap_strike, p.close_time AS close_ts,
    epoch(p.close_time) - epoch(p.ts) AS tau_seconds,
    p.spot, p.spot_ts, epoch(p.ts) - epoch(p.spot_ts) AS spot_age_seconds, p.vol,
    p.yes_bid, p.yes_ask, p.no_bid, p.no_ask, p.yes_bid_size, p.yes_ask_size,
    coalesce(epoch(p.received_ts) - epoch(p.ts), 0) AS quote_age_seconds, w.window_mean,
    $lot::INTEGER AS lot_size, p.fee_type, p.fee_multiplier,
    kalshi_taker_fee(p.yes_ask, $lot, p.fee_type, p.fee_multiplier) / $lot AS fee_yes,
    kalshi_taker_fee(p.no_ask, $lot, p.fee_type, p.fee_multiplier) / $lot AS fee_no,
    CASE WHEN p.yes_bid IS NOT NULL AND p.yes_ask IS NOT NULL THEN (p.yes_bid + p.yes_ask)::DOUBLE / 2 END AS p_mid,
    list_filter([
        CASE WHEN p.strike_type IS NULL THEN 'no_market_terms' END,
        CASE WHEN (p.strike_type IN ('greater', 'greater_or_equal') AND p.floor_strike IS NULL)
               OR (p.strike_type IN ('less', 'less_or_equal') AND p.cap_strike IS NULL)
               OR (p.strike_type = 'between' AND (p.floor_strike IS NULL OR p.cap_strike IS NULL)) THEN 'strike_unknown' END,
        CASE WHEN p.status IS DISTINCT FROM 'active' THEN 'not_active' END,
        CASE WHEN p.close_time <= p.ts THEN 'closed' END,
        CASE WHEN p.spot IS NULL THEN 'no_spot' WHEN epoch(p.ts) - epoch(p.spot_ts) > $max_spot_age THEN 'spot_stale' END,
        CASE WHEN p.vol IS NULL THEN 'no_vol' END,
        CASE WHEN coalesce(epoch(p.received_ts) - epoch(p.ts), 0) > $max_quote_age THEN 'quote_stale' END,
        CASE WHEN p.yes_ask IS NULL THEN 'no_yes_ask' END,
        CASE WHEN p.no_ask IS NULL THEN 'no_no_ask' END,
        CASE WHEN p.yes_bid IS NULL OR p.yes_ask IS NULL THEN 'one_sided'
             WHEN p.yes_ask - p.yes_bid > $max_spread THEN 'spread_wide' END,
        CASE WHEN epoch(p.close_time) - epoch(p.ts) > $max_tau THEN 'too_far_from_close' END,
        CASE WHEN p.fee_type IS NULL OR p.fee_type NOT IN ('quadratic', 'quadratic_with_maker_fees') THEN 'fee_unknown' END
    ], lambda x: x IS NOT NULL) AS base_reasons
FROM priced AS p LEFT JOIN in_window AS w USING (ticker, ts, source)
"""

# Reasons that make the model's probability meaningless (p_model stays NULL).
UNPRICEABLE = ("no_market_terms", "strike_unknown", "closed", "no_spot", "no_vol")


@dataclass(frozen=True)
class SnapshotRun:
    day: date
    quotes: int
    rows: int
    deleted: int
    spot_watermark: datetime | None


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def price_frame(base: pl.DataFrame, rules: Rules = RULES) -> pl.DataFrame:
    """One row per (quote, model): probabilities in numpy, EVs and relevance reasons in polars."""
    n = base.height
    blocked = base["base_reasons"].list.eval(pl.element().is_in(list(UNPRICEABLE))).list.any().to_numpy() if n else np.array([], bool)
    frames = []
    for model in MODELS:
        p = prob_yes(base["strike_type"].to_numpy(), base["floor_strike"].to_numpy(), base["cap_strike"].to_numpy(),
                     base["spot"].cast(pl.Float64).to_numpy(), base["vol"].cast(pl.Float64).to_numpy(),
                     base["tau_seconds"].cast(pl.Float64).to_numpy(), model=model,
                     window_mean=base["window_mean"].cast(pl.Float64).to_numpy())
        p = np.where(blocked, np.nan, p)
        frames.append(base.with_columns(pl.lit(model).alias("model_version"), pl.Series("p_model", p, dtype=pl.Float64).fill_nan(None)))
    out = pl.concat(frames) if frames else base
    yes_ask, no_ask = pl.col("yes_ask").cast(pl.Float64), pl.col("no_ask").cast(pl.Float64)
    relevance = (pl.when(pl.col("p_model") < rules.min_p).then(pl.lit(["deep_out_of_money"]))
                 .when(pl.col("p_model") > 1 - rules.min_p).then(pl.lit(["deep_in_money"]))
                 .otherwise(pl.lit([], dtype=pl.List(pl.String))))
    out = out.with_columns(
        (pl.col("p_model") - yes_ask - pl.col("fee_yes")).alias("ev_yes"),
        ((1 - pl.col("p_model")) - no_ask - pl.col("fee_no")).alias("ev_no"),
    )
    no_edge = (pl.when(pl.col("p_model").is_not_null()
                       & (pl.max_horizontal(pl.col("ev_yes").fill_null(-1.0), pl.col("ev_no").fill_null(-1.0)) < rules.min_ev))
               .then(pl.lit(["no_edge"])).otherwise(pl.lit([], dtype=pl.List(pl.String))))
    return out.with_columns(
        (pl.col("p_model") - pl.col("p_mid")).alias("model_minus_mid"),
        pl.concat_list("base_reasons", relevance, no_edge).alias("reasons"),
        pl.concat_str([pl.col("ticker"), pl.col("quote_ts").dt.epoch("us").cast(pl.String), pl.col("quote_source").fill_null(""),
                       pl.col("model_version")], separator="|").alias("_id_src"),
        pl.lit(rules.version).alias("rules_version"),
    ).drop("base_reasons")


def compute_snapshots(conn: duckdb.DuckDBPyConnection, day: date, *, full: bool, lot: int, rules: Rules = RULES) -> SnapshotRun:
    """Snapshot the day's quotes: the new ones (live) or all of them (full = backfill)."""
    conn.execute(FEE_MACRO_SQL)
    day_start, day_end = _day_bounds(day)
    wm_key = f"kalshi_edge_snapshots:{day.isoformat()}"
    spot_wm = spot_watermark(conn)
    conn.execute("BEGIN TRANSACTION")
    try:
        deleted = 0
        if full:
            deleted = conn.execute("DELETE FROM kalshi_edge_snapshots WHERE quote_date = ?", [day]).fetchall()[0][0]
            conn.execute("DELETE FROM asset_watermarks WHERE asset = ?", [wm_key])
            from_ts = day_start - timedelta(microseconds=1)
        else:
            row = next(iter(conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [wm_key]).fetchall()), None)
            from_ts = max(day_start - timedelta(microseconds=1),
                          datetime.fromtimestamp(row[0] / 1e6, tz=timezone.utc) - LOOKBACK) if row else day_start - timedelta(microseconds=1)
        if spot_wm is None:
            conn.execute("COMMIT")
            return SnapshotRun(day, 0, 0, deleted, None)
        base = _frame(conn, BASE_SQL, {
            "day": day, "day_start": day_start, "day_end": day_end, "from_ts": from_ts, "spot_wm": spot_wm, "lot": lot,
            "max_spot_age": rules.max_spot_age_seconds, "max_quote_age": rules.max_quote_age_seconds,
            "max_spread": rules.max_spread, "max_tau": rules.max_tau_seconds,
        })
        rows = 0
        if base.height:
            out = price_frame(base, rules)
            conn.register("_snap_rows", out)
            try:
                conn.execute("INSERT INTO kalshi_edge_snapshots BY NAME "
                             "SELECT * EXCLUDE (_id_src), md5(_id_src) AS snapshot_id, now() AS created_at FROM _snap_rows")
            finally:
                conn.unregister("_snap_rows")
            rows = out.height
            newest = conn.execute("SELECT epoch_us(max(quote_ts)) FROM kalshi_edge_snapshots WHERE quote_date = ?", [day]).fetchall()[0][0]
            conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                         [wm_key, newest])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SnapshotRun(day, base.height, rows, deleted, spot_wm)
