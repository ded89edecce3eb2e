"""Synthetic market data generated in DuckDB SQL, for the pricing tests and the benchmark.

Spot: one BTC-USD trade per second on a seeded random walk at Coinbase, and at Kraken and Bitstamp the same walk
with a slowly swinging basis of a few basis points, their trades 300 and 600 ms later; with `official`, the official
index (Kalshi's `cfbenchmarks_value`) once a second, received 150 ms late, a basis of its own away from the walk. Markets: per hour, a KXBTCD "greater" ladder and a
KXBTC "between" ladder of `strikes` markets each, plus four KXBTC15M markets whose strike is published 30 s after
open. Quotes: every `quote_every` seconds per open market, a two-sided book around a noisy mid, sometimes one-sided.
Rows go to staging tables `syn_*`; `publish_until` copies what would have been loaded by a given time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb


def generate(conn: duckdb.DuckDBPyConnection, start: datetime, hours: int, *, strikes: int = 20,
             quote_every: int = 5, seed: float = 0.42, hour_offset: int = 0, first_trade_id: int = 0,
             start_price: float = 95000.0, official: bool = False) -> None:
    """`hour_offset`, `first_trade_id` and `start_price` let consecutive calls continue one history: distinct
    tickers, distinct trade ids, and a spot path that goes on from where the previous call ended."""
    conn.execute(f"SELECT setseed({seed})")
    params = {"start": start, "secs": hours * 3600, "hours": hours, "strikes": strikes, "every": quote_every,
              "h0": hour_offset, "id0": first_trade_id, "p0": start_price}
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE syn_spot AS
        WITH s AS (SELECT i, $start::TIMESTAMPTZ + to_seconds(i) AS ts,
                          sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS z
                   FROM range(0, $secs) AS r(i))
        SELECT ts, ts AS received_ts, 'BTC-USD' AS product_id, 1000 + $id0 + i AS sequence, $id0 + i AS trade_id,
               round($p0 * exp(0.6 / sqrt(31557600) * sum(z) OVER (ORDER BY i)), 2)::DECIMAL(18, 8) AS price
        FROM s
    """, {k: params[k] for k in ("start", "secs", "id0", "p0")})
    for venue, symbol, basis, lag_ms in (("kraken", "BTC/USD", "2e-4 * sin(i / 400.0)", 300),
                                         ("bitstamp", "btcusd", "-1.5e-4 * cos(i / 700.0)", 600)):
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE syn_{venue} AS
            SELECT ts + INTERVAL {lag_ms} MILLISECOND AS ts, ts + INTERVAL {lag_ms} MILLISECOND AS received_ts,
                   '{symbol}' AS symbol, trade_id, round(price * (1 + {basis}), 1)::DECIMAL(18, 8) AS price,
                   0.01::DECIMAL(18, 8) AS size, CASE WHEN trade_id % 2 = 0 THEN 'buy' ELSE 'sell' END AS side
            FROM (SELECT *, trade_id - $id0 AS i FROM syn_spot)
        """, {"id0": params["id0"]})
    if official:
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE syn_official AS
            SELECT ts, ts + INTERVAL 150 MILLISECOND AS received_ts, ts + INTERVAL 20 MILLISECOND AS kalshi_received_ts,
                   'BRTI' AS index_id, round(price * (1 + 1e-4 * sin((trade_id - $id0) / 300.0)), 2)::DECIMAL(18, 8) AS value
            FROM syn_spot
        """, {"id0": params["id0"]})
    else:
        conn.execute("DROP TABLE IF EXISTS syn_official")
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE syn_markets AS
        WITH hours AS (SELECT h, $start::TIMESTAMPTZ + to_hours(h) AS open_ts FROM range(0, $hours) AS r(h)),
        ladder AS (
            SELECT 'KXBTCD' AS series, 'greater' AS strike_type, h, open_ts, k,
                   95000 + 250 * (k - $strikes // 2) - 0.01 AS floor_strike, NULL::DOUBLE AS cap_strike, 0 AS strike_delay
            FROM hours, range(0, $strikes) AS r(k)
            UNION ALL
            SELECT 'KXBTC', 'between', h, open_ts, k, 95000 + 500 * (k - $strikes // 2), 95000 + 500 * (k - $strikes // 2) + 499.99, 0
            FROM hours, range(0, $strikes) AS r(k)
            UNION ALL
            SELECT 'KXBTC15M', 'greater_or_equal', h, open_ts + to_minutes(15 * q), q, 95000, NULL, 30
            FROM hours, range(0, 4) AS r(q)
        )
        SELECT series AS series_ticker, strike_type, floor_strike, cap_strike, open_ts AS open_time,
               open_ts + CASE WHEN series = 'KXBTC15M' THEN INTERVAL 15 MINUTE ELSE INTERVAL 1 HOUR END AS close_time,
               series || '-H' || ($h0 + h) || '-' || k AS ticker, series || '-H' || ($h0 + h) AS event_ticker, strike_delay
        FROM ladder
    """, {k: params[k] for k in ("start", "hours", "strikes", "h0")})
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE syn_quotes AS
        WITH q AS (
            SELECT m.*, m.open_time + to_seconds(i) AS ts, random() AS u, random() AS v, random() AS w
            FROM syn_markets AS m, range(0, 3600, $every) AS r(i)
            WHERE m.open_time + to_seconds(i) < m.close_time
        ), p AS (SELECT *, round(0.03 + 0.94 * u, 2) AS mid FROM q)
        SELECT ts, ts AS received_ts, ticker, event_ticker, series_ticker, 'active' AS status,
               CASE WHEN w < 0.05 THEN NULL ELSE greatest(mid - 0.01 - round(v * 0.03, 2), 0.01) END::DECIMAL(18, 4) AS yes_bid,
               CASE WHEN w > 0.95 THEN NULL ELSE least(mid + 0.01, 0.99) END::DECIMAL(18, 4) AS yes_ask,
               CASE WHEN w > 0.95 THEN NULL ELSE 1 - least(mid + 0.01, 0.99) END::DECIMAL(18, 4) AS no_bid,
               CASE WHEN w < 0.05 THEN NULL ELSE 1 - greatest(mid - 0.01 - round(v * 0.03, 2), 0.01) END::DECIMAL(18, 4) AS no_ask,
               round(100 + 900 * v)::DECIMAL(18, 2) AS yes_bid_size, round(100 + 900 * u)::DECIMAL(18, 2) AS yes_ask_size,
               mid::DECIMAL(18, 4) AS last_price, NULL::DECIMAL(18, 2) AS volume, NULL::DECIMAL(18, 2) AS open_interest,
               'rest_markets' AS source
        FROM p
    """, {k: params[k] for k in ("every",)})
    # Market metadata as the poller writes it: at first sight, and again when the 15M strike is published.
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE syn_market_rows AS
        SELECT open_time AS ts, ticker, event_ticker, series_ticker, 'binary' AS market_type, 'active' AS status,
               NULL AS result, strike_type, CASE WHEN strike_delay > 0 THEN NULL ELSE floor_strike END AS floor_strike,
               cap_strike, open_time, close_time, close_time AS expected_expiration_time,
               close_time AS latest_expiration_time, 60 AS settlement_timer_seconds, '{}' AS raw_json
        FROM syn_markets
        UNION ALL
        SELECT open_time + to_seconds(strike_delay), ticker, event_ticker, series_ticker, 'binary', 'active', NULL,
               strike_type, floor_strike, cap_strike, open_time, close_time, close_time, close_time, 60, '{}'
        FROM syn_markets WHERE strike_delay > 0
    """)


def publish_until(conn: duckdb.DuckDBPyConnection, until: datetime, load_id: int) -> None:
    """Copy the staged rows with ts < until (not yet copied) into the warehouse tables, as one load would: with
    quote keys, and with the inputs' writers complete up to `until`."""
    from kalshi_shadow.warehouse.loader import QUOTE_KEY_SQL

    conn.execute("INSERT INTO kalshi_series (ts, series_ticker, fee_type, fee_multiplier, load_id) "
                 "SELECT min(ts) - INTERVAL 1 SECOND, s, 'quadratic', 1.0, 0 FROM syn_spot, (VALUES ('KXBTCD'), ('KXBTC'), ('KXBTC15M')) AS v(s) "
                 "WHERE NOT EXISTS (SELECT 1 FROM kalshi_series WHERE series_ticker = s) GROUP BY s")
    staged_tables = [("spot_ticks", "syn_spot", ""), ("kraken_trades", "syn_kraken", ""),
                     ("bitstamp_trades", "syn_bitstamp", ""), ("kalshi_markets", "syn_market_rows", ""),
                     ("kalshi_quotes", "(SELECT *, NULL AS yes_bid_levels, NULL AS no_bid_levels FROM syn_quotes)",  # no depth
                      f", {QUOTE_KEY_SQL.format(a='')} AS quote_key")]
    if conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'syn_official'").fetchall()[0][0]:
        staged_tables.append(("cfb_index_values", "syn_official", ""))
    for table, staged, key in staged_tables:
        conn.execute(f"""
            INSERT INTO {table} BY NAME
            SELECT *{key}, {int(load_id)} AS load_id FROM {staged}
            WHERE ts < $until AND ts > (SELECT coalesce(max(ts), '-infinity'::TIMESTAMPTZ) FROM {table})
        """, {"until": until})
    conn.execute("""
        INSERT INTO raw_writer_progress BY NAME
        SELECT t AS table_name, 'synthetic' AS writer, $n AS contiguous_seq, $until AS contiguous_flushed_at, $n AS max_seq,
               $until AS max_flushed_at, $until AS contiguous_file_flushed_at
        FROM (SELECT unnest($tables::VARCHAR[]) AS t)
        ON CONFLICT (table_name, writer) DO UPDATE SET contiguous_seq = excluded.contiguous_seq,
            contiguous_flushed_at = excluded.contiguous_flushed_at, max_seq = excluded.max_seq, max_flushed_at = excluded.max_flushed_at,
            contiguous_file_flushed_at = excluded.contiguous_file_flushed_at
    """, {"n": int(load_id), "until": until - timedelta(microseconds=1), "tables": [t for t, _, _ in staged_tables] + ["kalshi_series"]})
