"""A quote's inputs are stored once, not once per model (issue 17: the months bench's disk budget). With four models,
each quote's prices, sizes, fees, strikes and spot were written four times: 291 of 430 MiB a day. Now
  * kalshi_edge_snapshot_quotes holds one row per priced quote: its inputs and the reasons that do not depend on
    a model;
  * kalshi_edge_snapshot_models holds one row per (quote, model): p_model and the model's own reasons
    (model_unpriced, deep_out_of_money, deep_in_money, no_edge);
  * kalshi_edge_snapshots, the name users query, becomes a view joining them, with the same columns in the same
    order, and snapshot_id, the EVs and model_minus_mid computed as before.
snapshot_seq joins the two: it grows with insertion (the next value is kept in asset_watermarks), so a filter on
the quotes' time reaches the models' rows through the join's min/max filter and their zone maps.
Every row is kept: a quote's inputs were written by one statement for all its models, so they agree; the reasons
split into the model's own and the rest, and concatenate back in the order they were written. The rows move an
hour of quote time at a time: in one statement, the dedup of a single day's 7M rows ran out of the connection's
1 GB memory limit.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb

TABLES_SQL = """
CREATE TABLE kalshi_edge_snapshot_quotes (
    snapshot_seq      BIGINT NOT NULL,       -- joins kalshi_edge_snapshot_models; grows with insertion
    quote_key         UUID NOT NULL,         -- the quote's natural key (kalshi_quotes.quote_key)
    quote_date        DATE NOT NULL,         -- UTC day of quote_ts: the Dagster partition
    ticker            VARCHAR NOT NULL,
    series_ticker     VARCHAR NOT NULL,
    event_ticker      VARCHAR NOT NULL,
    quote_ts          TIMESTAMPTZ NOT NULL,
    seen_ts           TIMESTAMPTZ,           -- when the quote was seen (received): the time a decision on it is made
    quote_source      VARCHAR,
    created_at        TIMESTAMPTZ NOT NULL,  -- when this row was computed (not part of its identity)
    status            VARCHAR,
    strike_type       VARCHAR,
    floor_strike      DOUBLE,                -- as known when the quote was seen
    cap_strike        DOUBLE,
    close_ts          TIMESTAMPTZ,
    tau_seconds       DOUBLE,                -- close_ts - quote_ts
    spot              DOUBLE,                -- the index's value for the second the quote was seen in
    spot_ts           TIMESTAMPTZ,
    spot_age_seconds  DOUBLE,                -- quote seen - newest index input received
    vol               DOUBLE,                -- annualised, as of the quote's minute
    yes_bid           DECIMAL(18, 4),
    yes_ask           DECIMAL(18, 4),
    no_bid            DECIMAL(18, 4),
    no_ask            DECIMAL(18, 4),
    yes_bid_size      DECIMAL(18, 2),
    yes_ask_size      DECIMAL(18, 2),
    quote_age_seconds DOUBLE,                -- when the quote was seen (received_ts) - quote_ts
    window_mean       DOUBLE,                -- the settlement average so far, inside the last 60 s
    lot_size          INTEGER NOT NULL,
    fee_type          VARCHAR,
    fee_multiplier    DOUBLE,
    fee_yes           DOUBLE,                -- per contract: fee of one lot_size order at yes_ask, rounded up to the cent, / lot_size
    fee_no            DOUBLE,
    p_mid             DOUBLE,                -- market implied P(YES) from the mid
    quote_reasons     VARCHAR[] NOT NULL,    -- the filters that failed whatever the model
    rules_version     VARCHAR NOT NULL,      -- which filter thresholds produced the reasons (pricing/rules.py)
    index_source      VARCHAR,
    book_age_seconds  DOUBLE,
    index_move        DOUBLE,
    trading_active    BOOLEAN
);

CREATE TABLE kalshi_edge_snapshot_models (
    snapshot_seq      BIGINT NOT NULL,       -- the quote's row in kalshi_edge_snapshot_quotes
    model_version     VARCHAR NOT NULL,
    p_model           DOUBLE,                -- model P(YES); NULL when the model cannot price (see reasons)
    model_reasons     VARCHAR[] NOT NULL     -- model_unpriced, deep_out_of_money, deep_in_money, no_edge
);
"""

# One hour of the old table's quotes: each quote once (its inputs agree across models; the newest row if not),
# numbered in quote time, then each (quote, model) row pointing at it.
WINDOW_SQL = (
    "CREATE OR REPLACE TEMP TABLE _old AS SELECT * FROM kalshi_edge_snapshots WHERE quote_ts >= $lo AND quote_ts < $hi",
    """CREATE OR REPLACE TEMP TABLE _quotes AS
       SELECT $next + row_number() OVER (ORDER BY quote_ts, quote_key) - 1 AS snapshot_seq, *
       FROM (SELECT DISTINCT ON (quote_key) * FROM _old ORDER BY quote_key, created_at DESC)""",
    """INSERT INTO kalshi_edge_snapshot_quotes BY NAME
       SELECT * EXCLUDE (snapshot_id, model_version, p_model, model_minus_mid, ev_yes, ev_no, reasons),
              list_filter(reasons, lambda r: r NOT IN ('model_unpriced', 'deep_out_of_money', 'deep_in_money', 'no_edge'))
                  AS quote_reasons
       FROM _quotes ORDER BY snapshot_seq""",
    """INSERT INTO kalshi_edge_snapshot_models
       SELECT q.snapshot_seq, o.model_version, o.p_model,
              list_filter(o.reasons, lambda r: r IN ('model_unpriced', 'deep_out_of_money', 'deep_in_money', 'no_edge'))
       FROM _old AS o JOIN _quotes AS q USING (quote_key)
       ORDER BY q.snapshot_seq, o.model_version""",
)

VIEWS_SQL = """
DROP TABLE IF EXISTS _old;
DROP TABLE IF EXISTS _quotes;
DROP VIEW IF EXISTS kalshi_edges;
DROP TABLE kalshi_edge_snapshots;

CREATE VIEW kalshi_edge_snapshots AS
SELECT xor(q.quote_key::UHUGEINT, md5_number(m.model_version))::UUID AS snapshot_id,  -- unique per (quote, model)
       q.quote_key, q.quote_date, q.ticker, q.series_ticker, q.event_ticker, m.model_version, q.quote_ts, q.seen_ts,
       q.quote_source, q.created_at, q.status, q.strike_type, q.floor_strike, q.cap_strike, q.close_ts, q.tau_seconds,
       q.spot, q.spot_ts, q.spot_age_seconds, q.vol, q.yes_bid, q.yes_ask, q.no_bid, q.no_ask, q.yes_bid_size,
       q.yes_ask_size, q.quote_age_seconds, q.window_mean, q.lot_size, q.fee_type, q.fee_multiplier, q.fee_yes, q.fee_no,
       m.p_model, q.p_mid,
       m.p_model - q.p_mid AS model_minus_mid,
       m.p_model - q.yes_ask::DOUBLE - q.fee_yes AS ev_yes,
       (1 - m.p_model) - q.no_ask::DOUBLE - q.fee_no AS ev_no,
       list_concat(q.quote_reasons, m.model_reasons) AS reasons,
       q.rules_version, q.index_source, q.book_age_seconds, q.index_move, q.trading_active
FROM kalshi_edge_snapshot_quotes AS q JOIN kalshi_edge_snapshot_models AS m USING (snapshot_seq);

CREATE VIEW kalshi_edges AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY ticker, model_version ORDER BY quote_ts DESC) AS rn
    FROM kalshi_edge_snapshots
    WHERE quote_date >= CAST(now() AT TIME ZONE 'UTC' AS DATE) - 1
) WHERE rn = 1;
"""


def migrate(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("SET preserve_insertion_order = true")  # keep the time order zone maps rely on
    conn.execute(TABLES_SQL)
    next_seq = 1
    hours = [h for (h,) in conn.execute("SELECT DISTINCT time_bucket(INTERVAL 1 HOUR, quote_ts) FROM kalshi_edge_snapshots ORDER BY 1").fetchall()]
    for h in hours:
        for sql in WINDOW_SQL:
            params = {"lo": h, "hi": h + timedelta(hours=1), "next": next_seq}
            conn.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
        next_seq += conn.execute("SELECT count(*) FROM _quotes").fetchall()[0][0]
    conn.execute("""INSERT INTO asset_watermarks VALUES ('kalshi_edge_snapshots.next_seq', ?)
                    ON CONFLICT (asset) DO UPDATE SET value = excluded.value""", [next_seq])
    conn.execute(VIEWS_SQL)
