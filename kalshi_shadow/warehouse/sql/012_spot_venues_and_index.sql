-- More spot venues and the index proxy (issue 16). The contracts settle on CF Benchmarks' BRTI, computed from several
-- venues; pricing on Coinbase alone measured the model against the wrong number.

-- Public trades of Kraken (BTC/USD) and Bitstamp (btcusd), one table per venue like its raw folder; spot_ticks stays
-- Coinbase's ticker.
CREATE TABLE IF NOT EXISTS kraken_trades (
    ts          TIMESTAMPTZ NOT NULL,   -- the venue's trade time
    received_ts TIMESTAMPTZ,            -- ours: what point-in-time joins use
    symbol      VARCHAR NOT NULL,
    trade_id    BIGINT,
    price       DECIMAL(18, 8),
    size        DECIMAL(18, 8),
    side        VARCHAR,                -- the taker's side
    load_id     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS bitstamp_trades (
    ts          TIMESTAMPTZ NOT NULL,
    received_ts TIMESTAMPTZ,
    symbol      VARCHAR NOT NULL,
    trade_id    BIGINT,
    price       DECIMAL(18, 8),
    size        DECIMAL(18, 8),
    side        VARCHAR,
    load_id     BIGINT NOT NULL
);

-- Every venue's BTC/USD trades in one shape, for notebooks and the index proxy.
CREATE OR REPLACE VIEW spot_venue_trades AS
SELECT 'coinbase' AS venue, ts, coalesce(received_ts, ts) AS seen_ts, price, last_size AS size, trade_id FROM spot_ticks WHERE product_id = 'BTC-USD'
UNION ALL
SELECT 'kraken', ts, coalesce(received_ts, ts), price, size, trade_id FROM kraken_trades
UNION ALL
SELECT 'bitstamp', ts, coalesce(received_ts, ts), price, size, trade_id FROM bitstamp_trades;

-- The index proxy, one row per UTC second (pricing/index.py): each venue's latest price received at or before the
-- second (NULL once it has been silent longer than the staleness bound), the venues more than the deviation bound
-- from the median of the fresh ones, and the median of the rest. Written once, up to where every live venue is
-- complete, and never changed: snapshots read it, so a backfill reproduces the live rows.
CREATE TABLE IF NOT EXISTS spot_index (
    ts          TIMESTAMPTZ NOT NULL,   -- the second: the state as received by this instant
    price       DECIMAL(18, 8),         -- the index used for pricing; NULL when no venue is fresh
    source      VARCHAR,                -- 'proxy' (2+ venues), a venue's name (just one: index_degraded), NULL (none)
    n_venues    INTEGER NOT NULL,       -- venues in the median
    coinbase    DECIMAL(18, 8),         -- each venue's latest price if fresh (kept even when excluded)
    kraken      DECIMAL(18, 8),
    bitstamp    DECIMAL(18, 8),
    excluded    VARCHAR[] NOT NULL,     -- fresh venues left out for being too far from the others
    newest_seen TIMESTAMPTZ             -- the newest tick among the venues used: its age is the index's staleness
);

-- Which index priced each snapshot: 'proxy', 'official' (Kalshi's cfbenchmarks_value), or one venue's name.
ALTER TABLE kalshi_edge_snapshots ADD COLUMN IF NOT EXISTS index_source VARCHAR;
