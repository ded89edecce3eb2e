-- The official index when keyed (issue 16): Kalshi's `cfbenchmarks_value` channel relays CF Benchmarks' BRTI, the
-- index the contracts settle on. Pricing uses it where it is fresh and the venues' proxy otherwise.

-- One row per value received (collectors/cfbenchmarks.py).
CREATE TABLE IF NOT EXISTS cfb_index_values (
    ts                 TIMESTAMPTZ NOT NULL,   -- CF Benchmarks' time of the value
    received_ts        TIMESTAMPTZ,            -- ours: what point-in-time joins use
    kalshi_received_ts TIMESTAMPTZ,            -- when Kalshi received it
    index_id           VARCHAR NOT NULL,       -- BRTI
    value              DECIMAL(18, 8),
    avg_60s            DECIMAL(18, 8),         -- Kalshi's trailing average of the ticks in [ts - 60 s, ts)
    avg_60s_ticks      BIGINT,
    final_minute_avg   DECIMAL(18, 8),         -- the running settlement average, in the last minute before :00/:15/:30/:45
    final_minute_ticks BIGINT,                 -- ticks in it so far (60 at the close)
    seq                BIGINT,
    load_id            BIGINT NOT NULL
);

-- The grid keeps both indices side by side: `proxy` (the venues' median, what `price` was before this migration)
-- and `official` (the newest official value received by the second, if fresh); `price` is the one pricing used.
ALTER TABLE spot_index ADD COLUMN IF NOT EXISTS proxy DECIMAL(18, 8);
ALTER TABLE spot_index ADD COLUMN IF NOT EXISTS official DECIMAL(18, 8);
UPDATE spot_index SET proxy = price WHERE proxy IS NULL AND price IS NOT NULL;
