-- One row per market ticker: its static terms (latest seen), fees from its series, and its settlement.
-- Settlement columns are filled by the settlements asset from the exchange's answer for this exact ticker.
CREATE TABLE IF NOT EXISTS kalshi_contracts (
    ticker                   VARCHAR PRIMARY KEY,
    series_ticker            VARCHAR NOT NULL,
    event_ticker             VARCHAR NOT NULL,
    market_type              VARCHAR,            -- binary | scalar
    strike_type              VARCHAR,            -- between | greater | greater_or_equal | less | less_or_equal
    floor_strike             DOUBLE,             -- latest seen; point-in-time users read kalshi_markets ASOF
    cap_strike               DOUBLE,
    yes_sub_title            VARCHAR,
    open_ts                  TIMESTAMPTZ,
    close_ts                 TIMESTAMPTZ,
    expected_expiration_ts   TIMESTAMPTZ,
    latest_expiration_ts     TIMESTAMPTZ,
    settlement_timer_seconds BIGINT,
    status                   VARCHAR,            -- latest status seen
    fee_type                 VARCHAR,            -- from the series: quadratic | quadratic_with_maker_fees | flat
    fee_multiplier           DOUBLE,
    first_seen_ts            TIMESTAMPTZ,
    last_seen_ts             TIMESTAMPTZ,
    -- settlement (issue: settlements and scores)
    outcome                  VARCHAR,            -- yes | no | scalar | void | NULL while unsettled
    settlement_value         DECIMAL(18, 4),     -- dollars paid per YES contract (1, 0, or the scalar value)
    expiration_value         DECIMAL(18, 8),     -- the realised 60-s BRTI average
    settled_ts               TIMESTAMPTZ,
    settlement_status        VARCHAR,            -- market status when the outcome was read: determined | amended | finalized ...
    settlement_checked_at    TIMESTAMPTZ
);
