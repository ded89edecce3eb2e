-- Raw tables, loaded from the collectors' Parquet files exactly once (see raw_file_loads).
-- Columns mirror kalshi_shadow/raw/schemas.py; `load_id` says which file load brought the row in.

CREATE SEQUENCE IF NOT EXISTS raw_file_load_ids START 1;

-- The exactly-once ledger: a file is loaded in the same transaction that records it here.
CREATE TABLE IF NOT EXISTS raw_file_loads (
    load_id     BIGINT PRIMARY KEY,
    table_name  VARCHAR NOT NULL,
    file_name   VARCHAR NOT NULL,   -- path relative to the raw dir: <table>/date=YYYY-MM-DD/<name>.parquet
    row_count   BIGINT NOT NULL,    -- rows in the file
    loaded_at   TIMESTAMPTZ NOT NULL,
    writer      VARCHAR,            -- from the file name (kalshi_shadow/raw/store.py): who wrote it,
    seq         BIGINT,             -- its place in that writer's gap-free sequence,
    flushed_at  TIMESTAMPTZ,        -- and when it was flushed
    duplicate_rows BIGINT NOT NULL DEFAULT 0,  -- rows already in the warehouse under their natural key (not inserted)
    archived_to VARCHAR,            -- the hourly archive file that now holds it, once compacted
    UNIQUE (table_name, file_name)
);

-- Per raw writer: how far its files have arrived without a gap. The pricing frontier is built from this
-- (kalshi_shadow/warehouse/frontier.py): everything a writer saw up to contiguous_flushed_at is loaded.
CREATE TABLE IF NOT EXISTS raw_writer_progress (
    table_name            VARCHAR NOT NULL,
    writer                VARCHAR NOT NULL,
    contiguous_seq        BIGINT NOT NULL,     -- files 1..contiguous_seq have all arrived (loaded or quarantined)
    contiguous_flushed_at TIMESTAMPTZ,         -- flush time of file contiguous_seq (NULL while file 1 is missing)
    max_seq               BIGINT NOT NULL,
    max_flushed_at        TIMESTAMPTZ NOT NULL,
    gap_since             TIMESTAMPTZ,         -- wall time a gap after contiguous_seq was first seen; NULL = no gap
    PRIMARY KEY (table_name, writer)
);

CREATE TABLE IF NOT EXISTS spot_ticks (
    ts            TIMESTAMPTZ NOT NULL,
    received_ts   TIMESTAMPTZ,
    product_id    VARCHAR NOT NULL,
    sequence      BIGINT,
    trade_id      BIGINT,
    price         DECIMAL(18, 8),
    best_bid      DECIMAL(18, 8),
    best_ask      DECIMAL(18, 8),
    best_bid_size DECIMAL(18, 8),
    best_ask_size DECIMAL(18, 8),
    last_size     DECIMAL(18, 8),
    side          VARCHAR,
    load_id       BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS kalshi_quotes (
    ts            TIMESTAMPTZ NOT NULL,
    received_ts   TIMESTAMPTZ,
    ticker        VARCHAR NOT NULL,
    event_ticker  VARCHAR,
    series_ticker VARCHAR,
    status        VARCHAR,
    yes_bid       DECIMAL(18, 4),   -- null = that side is not quoted
    yes_ask       DECIMAL(18, 4),
    no_bid        DECIMAL(18, 4),
    no_ask        DECIMAL(18, 4),
    yes_bid_size  DECIMAL(18, 2),
    yes_ask_size  DECIMAL(18, 2),
    last_price    DECIMAL(18, 4),
    volume        DECIMAL(18, 2),
    open_interest DECIMAL(18, 2),
    source        VARCHAR,
    quote_key     UUID NOT NULL,    -- natural key: md5 of every field above (16 bytes), so a re-sent row loads once while
                                    -- two different quotes with one exchange timestamp stay two
    load_id       BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS kalshi_markets (
    ts                       TIMESTAMPTZ NOT NULL,
    ticker                   VARCHAR NOT NULL,
    event_ticker             VARCHAR,
    series_ticker            VARCHAR,
    market_type              VARCHAR,
    status                   VARCHAR,
    result                   VARCHAR,
    strike_type              VARCHAR,
    floor_strike             DOUBLE,
    cap_strike               DOUBLE,
    open_time                TIMESTAMPTZ,
    close_time               TIMESTAMPTZ,
    expected_expiration_time TIMESTAMPTZ,
    latest_expiration_time   TIMESTAMPTZ,
    settlement_timer_seconds BIGINT,
    settlement_value         DECIMAL(18, 4),
    expiration_value         DECIMAL(18, 8),
    settlement_ts            TIMESTAMPTZ,
    yes_sub_title            VARCHAR,
    updated_time             TIMESTAMPTZ,
    raw_json                 VARCHAR,
    load_id                  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS kalshi_series (
    ts             TIMESTAMPTZ NOT NULL,
    series_ticker  VARCHAR NOT NULL,
    title          VARCHAR,
    fee_type       VARCHAR,
    fee_multiplier DOUBLE,
    raw_json       VARCHAR,
    effective_ts   TIMESTAMPTZ,      -- when these fees apply: ts for a series read, the scheduled time of a fee change
    fee_change_id  VARCHAR,          -- set on rows from /series/fee_changes
    load_id        BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS collector_events (
    ts        TIMESTAMPTZ NOT NULL,
    collector VARCHAR NOT NULL,
    kind      VARCHAR NOT NULL,
    detail    VARCHAR,
    count     BIGINT,
    load_id   BIGINT NOT NULL
);

-- Raw files that could not be loaded: unreadable (moved to raw/_quarantine/), or missing from a writer's sequence
-- for longer than the gap timeout. Recorded once, skipped by later loads, counted by an asset check.
CREATE TABLE IF NOT EXISTS raw_file_failures (
    table_name VARCHAR NOT NULL,
    file_name  VARCHAR NOT NULL,
    error      VARCHAR,
    failed_at  TIMESTAMPTZ NOT NULL,
    writer     VARCHAR,
    seq        BIGINT,
    flushed_at TIMESTAMPTZ,
    UNIQUE (table_name, file_name)
);

-- Incremental watermarks of derived assets (e.g. the last kalshi_markets load_id folded into kalshi_contracts).
CREATE TABLE IF NOT EXISTS asset_watermarks (
    asset VARCHAR PRIMARY KEY,
    value BIGINT NOT NULL
);
