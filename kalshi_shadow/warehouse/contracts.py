"""`kalshi_contracts`: one row per ticker from the latest market metadata plus its series' fees.

Incremental: only tickers with market rows loaded since the last run (a load_id watermark). The upsert never
touches the settlement columns, which the settlements asset owns.
"""

from __future__ import annotations

import duckdb
from kalshi_shadow.warehouse.connection import transaction

WATERMARK = "kalshi_contracts.markets_load_id"

UPSERT = """
INSERT INTO kalshi_contracts (
    ticker, series_ticker, event_ticker, market_type, strike_type, floor_strike, cap_strike, yes_sub_title,
    open_ts, close_ts, expected_expiration_ts, latest_expiration_ts, settlement_timer_seconds, status,
    fee_type, fee_multiplier, first_seen_ts, last_seen_ts)
WITH changed AS (
    SELECT ticker, min(ts) AS first_seen_ts, max(ts) AS last_seen_ts
    FROM kalshi_markets WHERE load_id > $watermark GROUP BY ticker
), latest AS (
    SELECT m.* FROM kalshi_markets AS m SEMI JOIN changed USING (ticker)
    QUALIFY row_number() OVER (PARTITION BY m.ticker ORDER BY m.ts DESC, m.load_id DESC) = 1
), series AS (
    SELECT series_ticker, fee_type, fee_multiplier FROM kalshi_series
    WHERE greatest(ts, coalesce(effective_ts, ts)) <= now()  -- a scheduled change applies only from its time
    QUALIFY row_number() OVER (PARTITION BY series_ticker ORDER BY greatest(ts, coalesce(effective_ts, ts)) DESC, ts DESC, load_id DESC) = 1
)
SELECT l.ticker, l.series_ticker, l.event_ticker, l.market_type, l.strike_type, l.floor_strike, l.cap_strike,
       l.yes_sub_title, l.open_time, l.close_time, l.expected_expiration_time, l.latest_expiration_time,
       l.settlement_timer_seconds, l.status, s.fee_type, s.fee_multiplier, c.first_seen_ts, c.last_seen_ts
FROM latest AS l JOIN changed AS c USING (ticker) LEFT JOIN series AS s USING (series_ticker)
ON CONFLICT (ticker) DO UPDATE SET
    series_ticker = excluded.series_ticker, event_ticker = excluded.event_ticker,
    market_type = excluded.market_type, strike_type = excluded.strike_type,
    floor_strike = excluded.floor_strike, cap_strike = excluded.cap_strike, yes_sub_title = excluded.yes_sub_title,
    open_ts = excluded.open_ts, close_ts = excluded.close_ts,
    expected_expiration_ts = excluded.expected_expiration_ts, latest_expiration_ts = excluded.latest_expiration_ts,
    settlement_timer_seconds = excluded.settlement_timer_seconds, status = excluded.status,
    fee_type = coalesce(excluded.fee_type, kalshi_contracts.fee_type),
    fee_multiplier = coalesce(excluded.fee_multiplier, kalshi_contracts.fee_multiplier),
    first_seen_ts = least(kalshi_contracts.first_seen_ts, excluded.first_seen_ts),
    last_seen_ts = greatest(kalshi_contracts.last_seen_ts, excluded.last_seen_ts)
"""

# A series row may arrive after its markets: fill or refresh fees of contracts still open (or closed within the day)
# wherever they differ from the latest series row; older contracts are not read every tick.
REFRESH_FEES = """
UPDATE kalshi_contracts AS c SET fee_type = s.fee_type, fee_multiplier = s.fee_multiplier
FROM (
    SELECT series_ticker, fee_type, fee_multiplier FROM kalshi_series
    WHERE greatest(ts, coalesce(effective_ts, ts)) <= now()
    QUALIFY row_number() OVER (PARTITION BY series_ticker ORDER BY greatest(ts, coalesce(effective_ts, ts)) DESC, ts DESC, load_id DESC) = 1
) AS s
WHERE c.series_ticker = s.series_ticker
  AND (c.close_ts IS NULL OR c.close_ts > now() - INTERVAL 1 DAY)  -- a closed contract keeps the fees it closed with
  AND (c.fee_type IS DISTINCT FROM s.fee_type OR c.fee_multiplier IS DISTINCT FROM s.fee_multiplier)
"""


def refresh_contracts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Fold newly loaded market rows into kalshi_contracts; returns counts for the asset's metadata."""
    with transaction(conn):
        row = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [WATERMARK]).fetchone()
        watermark = row[0] if row else 0
        new_mark = conn.execute("SELECT coalesce(max(load_id), 0) FROM kalshi_markets").fetchone()[0]
        upserted = conn.execute(UPSERT, {"watermark": watermark}).fetchone()[0] if new_mark > watermark else 0
        fees = conn.execute(REFRESH_FEES).fetchone()[0]
        conn.execute(
            "INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
            [WATERMARK, new_mark],
        )
        total = conn.execute("SELECT count(*) FROM kalshi_contracts").fetchone()[0]
    return {"upserted": int(upserted), "fees_refreshed": int(fees), "contracts": int(total)}
