-- Pricing outputs. kalshi_edge_snapshots is append-only: one row per (quote, model_version) with every
-- input needed to recompute it. kalshi_edges holds the latest snapshot per (ticker, model_version).
-- Monetary columns per contract, in dollars. `reasons` lists every filter that failed; empty = would be tradable.

CREATE TABLE IF NOT EXISTS kalshi_edge_snapshots (
    snapshot_id       UUID NOT NULL,         -- deterministic: quote_key xor md5_number(model_version); unique (a blocking check)
    quote_key         UUID NOT NULL,         -- the quote's natural key (kalshi_quotes.quote_key)
    quote_date        DATE NOT NULL,         -- UTC day of quote_ts: the Dagster partition
    ticker            VARCHAR NOT NULL,
    series_ticker     VARCHAR NOT NULL,
    event_ticker      VARCHAR NOT NULL,
    model_version     VARCHAR NOT NULL,
    quote_ts          TIMESTAMPTZ NOT NULL,
    seen_ts           TIMESTAMPTZ,           -- when the quote was seen (received): the time a decision on it is made
    quote_source      VARCHAR,
    created_at        TIMESTAMPTZ NOT NULL,  -- when this row was computed (not part of its identity)
    status            VARCHAR,
    strike_type       VARCHAR,
    floor_strike      DOUBLE,                -- as known at quote_ts
    cap_strike        DOUBLE,
    close_ts          TIMESTAMPTZ,
    tau_seconds       DOUBLE,                -- close_ts - quote_ts
    spot              DOUBLE,                -- last spot tick at or before quote_ts
    spot_ts           TIMESTAMPTZ,
    spot_age_seconds  DOUBLE,                -- quote seen - spot tick received
    vol               DOUBLE,                -- annualised, as of quote_ts
    yes_bid           DECIMAL(18, 4),
    yes_ask           DECIMAL(18, 4),
    no_bid            DECIMAL(18, 4),
    no_ask            DECIMAL(18, 4),
    yes_bid_size      DECIMAL(18, 2),
    yes_ask_size      DECIMAL(18, 2),
    quote_age_seconds DOUBLE,                -- when the quote was seen (received_ts) - quote_ts
    window_mean       DOUBLE,                -- mean spot in (close - 60 s, quote_ts] when inside the settlement window
    lot_size          INTEGER NOT NULL,
    fee_type          VARCHAR,
    fee_multiplier    DOUBLE,
    fee_yes           DOUBLE,                -- per contract: fee of one lot_size order at yes_ask, rounded up to the cent, / lot_size
    fee_no            DOUBLE,
    p_model           DOUBLE,                -- model P(YES); NULL when the model cannot price (see reasons)
    p_mid             DOUBLE,                -- market implied P(YES) from the mid
    model_minus_mid   DOUBLE,
    ev_yes            DOUBLE,                -- p_model - yes_ask - fee_yes
    ev_no             DOUBLE,                -- (1 - p_model) - no_ask - fee_no
    reasons           VARCHAR[] NOT NULL,    -- e.g. ['strike_unknown', 'spot_stale', 'no_yes_ask', 'spread_wide', 'not_active']
    rules_version     VARCHAR NOT NULL       -- which filter thresholds produced `reasons` (kalshi_shadow/pricing/rules.py)
);

-- Point-in-time volatility grid: one row per minute, from trades received at or before grid_ts only.
CREATE TABLE IF NOT EXISTS spot_vol (
    grid_ts        TIMESTAMPTZ PRIMARY KEY,
    price          DOUBLE NOT NULL,          -- last BTC-USD trade received at or before grid_ts
    gap_seconds    DOUBLE NOT NULL,          -- longest silence of the feed in (grid_ts - 60 s, grid_ts]: vol_gap past the rules' bound
    log_return     DOUBLE,                   -- NULL: no trade in the minute, the EWMA held (a gap is not a zero return)
    var_per_minute DOUBLE NOT NULL,          -- EWMA state
    vol            DOUBLE NOT NULL           -- annualised, floored and capped
);

-- The latest snapshot per (ticker, model_version): what the model thinks of each contract now.
CREATE OR REPLACE VIEW kalshi_edges AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY ticker, model_version ORDER BY quote_ts DESC) AS rn
    FROM kalshi_edge_snapshots
    WHERE quote_date >= CAST(now() AT TIME ZONE 'UTC' AS DATE) - 1
) WHERE rn = 1;
