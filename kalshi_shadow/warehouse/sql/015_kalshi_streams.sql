-- Kalshi as it streams (issue 17): books with depth from the WebSocket, the exchange's trading status, lifecycle
-- events, and what the decision log needs to walk a book.

-- Depth (stream rows only; NULL from REST pages): each side's top N bids, best first. `seq`: the subscription's
-- sequence number of the last message applied to the book.
ALTER TABLE kalshi_quotes ADD COLUMN IF NOT EXISTS yes_bid_levels STRUCT(price DECIMAL(18, 4), size DECIMAL(18, 2))[];
ALTER TABLE kalshi_quotes ADD COLUMN IF NOT EXISTS no_bid_levels STRUCT(price DECIMAL(18, 4), size DECIMAL(18, 2))[];
ALTER TABLE kalshi_quotes ADD COLUMN IF NOT EXISTS seq BIGINT;

-- GET /exchange/status as polled (collectors/quotes.py): trading pauses.
CREATE TABLE IF NOT EXISTS kalshi_exchange_status (
    ts                  TIMESTAMPTZ NOT NULL,   -- the request's send time
    received_ts         TIMESTAMPTZ,            -- its answer's: what point-in-time joins use
    exchange_active     BOOLEAN,
    trading_active      BOOLEAN,
    estimated_resume_ts TIMESTAMPTZ,
    load_id             BIGINT NOT NULL
);

-- market_lifecycle_v2 as streamed (keyed): listings, determinations (result, settlement value), settlements.
CREATE TABLE IF NOT EXISTS kalshi_lifecycle (
    ts               TIMESTAMPTZ NOT NULL,      -- the exchange's time of the event, else when received
    received_ts      TIMESTAMPTZ,
    ticker           VARCHAR NOT NULL,
    event_type       VARCHAR NOT NULL,
    result           VARCHAR,
    settlement_value DECIMAL(18, 4),
    raw_json         VARCHAR,
    load_id          BIGINT NOT NULL
);

-- Whether the exchange was trading when the quote was seen (the newest status received by then, if under a minute
-- old; NULL: unknown). A paused exchange takes no orders: the decision log skips with `exchange_paused`.
ALTER TABLE kalshi_edge_snapshots ADD COLUMN IF NOT EXISTS trading_active BOOLEAN;

-- A take that walked the book: the levels it bought from (ask price, contracts taken, contracts the level held) and
-- their volume-weighted price, which the fee and EV are computed on. Without depth a take buys at the ask only (one
-- level, the size shown there).
ALTER TABLE kalshi_would_trades ADD COLUMN IF NOT EXISTS avg_price DOUBLE;
ALTER TABLE kalshi_would_trades ADD COLUMN IF NOT EXISTS levels_used STRUCT(price DOUBLE, contracts INTEGER, size DOUBLE)[];

-- Where an outcome observation came from: 'rest' (GET /markets, the reads of the settlements step) or 'stream' (a
-- market_lifecycle_v2 determination or settlement, keyed). REST reads go on after a streamed outcome, as the check.
ALTER TABLE kalshi_settlement_observations ADD COLUMN IF NOT EXISTS source VARCHAR;
