"""A synthetic multi-day history with outcomes, for the report tests and for looking at a report by hand.

Builds on `pricing.synthetic.generate` (spot walk, ladders, quotes) and the real pipeline steps: the quotes' mids
are redrawn as a noisy version of the true probability (so the market is informative and sometimes wrong), the
contracts are upserted from the market rows, priced with `price_new_quotes`, settled from the 60-s spot average
before close (observations read 2 min after close; scores are a view of them), and decided with every rule set of
the rules file. The last `pending_hours` of the history are left unsettled.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb

from kalshi_shadow.decisions.engine import decide, settle
from kalshi_shadow.decisions.rulesets import load_rule_sets
from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
from kalshi_shadow.pricing.synthetic import generate, publish_until
from kalshi_shadow.scoring.settlements import OBS_TABLE_SQL, record_observations
from kalshi_shadow.warehouse.contracts import refresh_contracts

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
SIGMA = 0.6  # the generator's annual vol

# Phi(x) ~ 1 / (1 + exp(-1.5976 x - 0.07056 x^3)), |error| < 1.4e-4: DuckDB has no normal CDF.
_PHI = "(1 / (1 + exp(-1.5976 * ({x}) - 0.07056 * pow({x}, 3))))"
_D = "ln(s.price::DOUBLE / ({k})) / ({sig} * sqrt(greatest(epoch(q_close) - epoch(q.ts), 1) / 31557600))"

REDRAW_MIDS_SQL = f"""
CREATE OR REPLACE TEMP TABLE syn_quotes AS
WITH q AS (
    SELECT q.*, m.close_time AS q_close, m.strike_type AS q_type, m.floor_strike AS q_floor, m.cap_strike AS q_cap
    FROM syn_quotes AS q JOIN syn_markets AS m USING (ticker)
), p AS (
    SELECT q.*, CASE
        WHEN q_type = 'between' THEN {_PHI.format(x=_D.format(k='q_floor', sig=SIGMA))} - {_PHI.format(x=_D.format(k='q_cap', sig=SIGMA))}
        ELSE {_PHI.format(x=_D.format(k='q_floor', sig=SIGMA))} END AS p_true,
        sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS z
    FROM q JOIN syn_spot AS s ON s.ts = q.ts
), m AS (
    SELECT *, round(least(greatest(p_true + $noise * z + $bias, 0.02), 0.97), 2) AS mid FROM p
)
SELECT ts, received_ts, ticker, event_ticker, series_ticker, status,
       CASE WHEN yes_bid IS NULL THEN NULL ELSE greatest(mid - 0.01, 0.01) END::DECIMAL(18, 4) AS yes_bid,
       CASE WHEN yes_ask IS NULL THEN NULL ELSE least(mid + 0.01, 0.99) END::DECIMAL(18, 4) AS yes_ask,
       CASE WHEN yes_ask IS NULL THEN NULL ELSE 1 - least(mid + 0.01, 0.99) END::DECIMAL(18, 4) AS no_bid,
       CASE WHEN yes_bid IS NULL THEN NULL ELSE 1 - greatest(mid - 0.01, 0.01) END::DECIMAL(18, 4) AS no_ask,
       yes_bid_size, yes_ask_size, mid::DECIMAL(18, 4) AS last_price, volume, open_interest, source
FROM m
"""

# Thin the spot feed to a trade every 5 s (the vol grid's work grows with ticks), and centre each ladder on spot
# at its market's open, as the exchange does, so that contracts stay near the money over days of drift.
RECENTRE_SQL = [
    "DELETE FROM syn_spot WHERE trade_id % 5 <> 0",
    """CREATE OR REPLACE TEMP TABLE syn_offsets AS
       SELECT m.ticker, round((s.price::DOUBLE - 95000) / 500) * 500 AS off
       FROM syn_markets AS m JOIN syn_spot AS s ON s.ts = m.open_time""",
    """UPDATE syn_markets AS m SET floor_strike = m.floor_strike + o.off, cap_strike = m.cap_strike + o.off
       FROM syn_offsets AS o WHERE m.ticker = o.ticker""",
    """UPDATE syn_market_rows AS m SET floor_strike = m.floor_strike + o.off, cap_strike = m.cap_strike + o.off
       FROM syn_offsets AS o WHERE m.ticker = o.ticker""",
]

# Each contract settles on the 60-s mean of spot before its close, read from the "exchange" two minutes after close:
# staged as the settlements step stages what it reads, then recorded by the same code (`record_observations`).
SETTLE_SQL = """
INSERT INTO _obs
SELECT ticker, close_ts + INTERVAL 2 MINUTE, 'finalized', CASE WHEN yes THEN 'yes' ELSE 'no' END,
       CASE WHEN yes THEN 1 ELSE 0 END, avg60, close_ts + INTERVAL 1 MINUTE, CASE WHEN yes THEN 1 ELSE 0 END, 'rest'
FROM (
    SELECT c.ticker, c.close_ts, avg(s.price::DOUBLE) AS avg60,
           CASE WHEN c.strike_type = 'between' THEN avg(s.price::DOUBLE) BETWEEN c.floor_strike AND c.cap_strike
                WHEN c.strike_type = 'greater' THEN avg(s.price::DOUBLE) > c.floor_strike
                ELSE avg(s.price::DOUBLE) >= c.floor_strike END AS yes
    FROM kalshi_contracts AS c JOIN syn_spot AS s ON s.ts > c.close_ts - INTERVAL 60 SECOND AND s.ts <= c.close_ts
    WHERE c.close_ts <= $settled_until AND c.outcome IS NULL
    GROUP BY c.ticker, c.close_ts, c.strike_type, c.floor_strike, c.cap_strike
)
"""


def build_history(conn: duckdb.DuckDBPyConnection, *, start: datetime = START, days: int = 8, strikes: int = 3,
                  quote_every: int = 60, pending_hours: int = 3, mid_noise: float = 0.06, mid_bias: float = 0.0,
                  seed: float = 0.42, official: bool = False) -> dict[str, int]:
    """Fill an empty warehouse (schema ensured) with `days` days of priced, settled, scored and decided history
    (with `official`, the official index recorded too, as when keyed).

    About 1 s per day with the defaults. Returns row counts of the main tables."""
    hours = 24 * days
    end = start + timedelta(hours=hours)
    generate(conn, start, hours, strikes=strikes, quote_every=quote_every, seed=seed, official=official)
    for q in RECENTRE_SQL:
        conn.execute(q)
    conn.execute(REDRAW_MIDS_SQL, {"noise": mid_noise, "bias": mid_bias})
    publish_until(conn, end, load_id=1)
    refresh_contracts(conn)
    refresh_spot(conn)
    while True:  # a run prices at most a few chunks: go on until the frontier stops moving
        run = price_new_quotes(conn, lot=100)
        if run.rows == 0:
            break
    conn.execute(OBS_TABLE_SQL)
    conn.execute(SETTLE_SQL, {"settled_until": end - timedelta(hours=pending_hours)})
    record_observations(conn)
    for rs in load_rule_sets():
        decide(conn, rs)
    settle(conn)
    return dict(conn.execute("""SELECT 'quotes', count(*) FROM kalshi_quotes UNION ALL SELECT 'snapshots', count(*) FROM kalshi_edge_snapshots
                                UNION ALL SELECT 'scores', count(*) FROM kalshi_edge_snapshot_scores
                                UNION ALL SELECT 'decisions', count(*) FROM kalshi_would_trades
                                UNION ALL SELECT 'takes', count(*) FILTER (WHERE action = 'take') FROM kalshi_would_trades""").fetchall())
