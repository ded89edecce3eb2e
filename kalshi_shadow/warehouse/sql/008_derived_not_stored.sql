-- Nothing the warehouse can derive from what it holds is stored a second time: at the exchange's scale a month of
-- history must fit a small disk (BENCHMARKS.md, bytes per day). Three changes:
--   * kalshi_edge_snapshots: snapshot_id, ev_yes, ev_no and model_minus_mid become virtual columns, computed from the
--     stored quote key, prices, fees and p_model when read (the same expressions that wrote them before);
--   * kalshi_would_trades: decision_id becomes a virtual column of its version and snapshot;
--   * kalshi_edge_snapshot_scores becomes a view: a score is a snapshot and its contract's outcome, so it is always
--     current (an amended outcome rescores at once) and costs no disk.
-- Tables are rebuilt in insertion order (DuckDB cannot add a generated column to an existing table), every row kept.

SET preserve_insertion_order = true;  -- keep the time order zone maps rely on

ALTER TABLE kalshi_edge_snapshots RENAME TO kalshi_edge_snapshots_007;
CREATE TABLE kalshi_edge_snapshots (
    snapshot_id       UUID GENERATED ALWAYS AS (xor(quote_key::UHUGEINT, md5_number(model_version))::UUID) VIRTUAL,
                                             -- deterministic and unique per (quote, model) (a blocking check)
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
    model_minus_mid   DOUBLE GENERATED ALWAYS AS (p_model - p_mid) VIRTUAL,
    ev_yes            DOUBLE GENERATED ALWAYS AS (p_model - yes_ask::DOUBLE - fee_yes) VIRTUAL,
    ev_no             DOUBLE GENERATED ALWAYS AS ((1 - p_model) - no_ask::DOUBLE - fee_no) VIRTUAL,
    reasons           VARCHAR[] NOT NULL,    -- e.g. ['strike_unknown', 'spot_stale', 'no_yes_ask', 'spread_wide', 'not_active']
    rules_version     VARCHAR NOT NULL       -- which filter thresholds produced `reasons` (kalshi_shadow/pricing/rules.py)
);
INSERT INTO kalshi_edge_snapshots BY NAME
SELECT * EXCLUDE (snapshot_id, model_minus_mid, ev_yes, ev_no) FROM kalshi_edge_snapshots_007;
DROP TABLE kalshi_edge_snapshots_007;

ALTER TABLE kalshi_would_trades RENAME TO kalshi_would_trades_007;
CREATE TABLE kalshi_would_trades (
    decision_id       UUID GENERATED ALWAYS AS (md5_number(rule_set_version || '|' || snapshot_id::VARCHAR)::UUID) VIRTUAL,
                                              -- a re-run writes the same ids
    rule_set          VARCHAR NOT NULL,
    rule_set_version  VARCHAR NOT NULL,       -- name@hash of the set's content (kalshi_shadow/decisions/rules.toml)
    model_version     VARCHAR NOT NULL,
    decided_ts        TIMESTAMPTZ NOT NULL,   -- when the quote was seen: nothing known later was used
    decision_date     DATE NOT NULL,          -- UTC day of decided_ts
    snapshot_id       UUID NOT NULL,
    ticker            VARCHAR NOT NULL,
    series_ticker     VARCHAR NOT NULL,
    event_ticker      VARCHAR NOT NULL,
    action            VARCHAR NOT NULL,       -- take | skip
    reason            VARCHAR,                -- why skipped (NULL for a take); see kalshi_shadow/decisions/rules.py
    side              VARCHAR,                -- yes | no: the side with the larger EV
    p_side            DOUBLE,                 -- the model's probability of that side winning
    ask               DECIMAL(18, 4),         -- price of that side
    ask_size          DECIMAL(18, 2),         -- contracts shown at that ask
    haircut           DOUBLE,                 -- k x the model's recent mean absolute error (contracts settled before)
    ev_per_contract   DOUBLE,                 -- p_side - ask - fee per contract of this order, minus the haircut
    contracts         INTEGER,                -- size of the take (NULL for a skip)
    fee               DOUBLE,                 -- the order's taker fee, rounded up to the cent as Kalshi does
    cost              DOUBLE,                 -- contracts x ask + fee
    bankroll_before   DOUBLE NOT NULL,        -- cash before: start - cost of every take + payouts known by then
    open_exposure     DOUBLE NOT NULL,        -- cost of positions open before this decision
    outcome           VARCHAR,                -- filled at settlement: yes | no | scalar | void (the latest read)
    payout            DOUBLE,                 -- dollars the position paid (void: the cost back)
    realised_pnl      DOUBLE,                 -- payout - cost: net of the per-order fee
    settled_ts        TIMESTAMPTZ,            -- when the outcome was first recorded
    created_at        TIMESTAMPTZ NOT NULL
);
INSERT INTO kalshi_would_trades BY NAME SELECT * EXCLUDE (decision_id) FROM kalshi_would_trades_007;
DROP TABLE kalshi_would_trades_007;

-- One row per snapshot of a settled contract. Brier and log loss score P(YES) against y, the dollars one YES
-- contract paid (1 / 0, or the scalar value). Log loss clips p to [1e-6, 1 - 1e-6]. PnL is per contract, taking
-- that side at the ask net of the per-order fee. Void contracts keep a row with excluded_reason = 'void'.
-- Model and market are compared only on paired rows (excluded_reason IS NULL: model priced, book two-sided).
DROP TABLE kalshi_edge_snapshot_scores;
CREATE VIEW kalshi_edge_snapshot_scores AS
WITH s AS (
    SELECT s.snapshot_id, s.quote_date, s.ticker, s.series_ticker, s.model_version, s.quote_ts, s.tau_seconds,
           c.outcome, CASE WHEN c.outcome <> 'void' THEN c.settlement_value::DOUBLE END AS y, s.p_model, s.p_mid,
           least(greatest(s.p_model, 1e-6), 1 - 1e-6) AS pm, least(greatest(s.p_mid, 1e-6), 1 - 1e-6) AS pk,
           s.yes_ask, s.no_ask, s.fee_yes, s.fee_no, s.ev_yes, s.ev_no, s.reasons, c.outcome_known_ts
    FROM kalshi_edge_snapshots AS s JOIN kalshi_contracts AS c USING (ticker)
    WHERE c.outcome IS NOT NULL
)
SELECT snapshot_id, quote_date, ticker, series_ticker, model_version, quote_ts, tau_seconds, outcome, y, p_model, p_mid,
       (p_model - y) ^ 2                        AS brier_model,
       -(y * ln(pm) + (1 - y) * ln(1 - pm))     AS logloss_model,
       (p_mid - y) ^ 2                          AS brier_mid,
       -(y * ln(pk) + (1 - y) * ln(1 - pk))     AS logloss_mid,
       y - yes_ask::DOUBLE - fee_yes            AS pnl_yes,     -- y - yes_ask - fee_yes
       (1 - y) - no_ask::DOUBLE - fee_no        AS pnl_no,      -- (1 - y) - no_ask - fee_no
       ev_yes, ev_no,                                            -- what the snapshot predicted
       reasons,                                                  -- the snapshot's filter reasons (empty = would have traded)
       CASE WHEN outcome = 'void' THEN 'void' WHEN p_model IS NULL THEN 'model_unpriced'
            WHEN p_mid IS NULL THEN 'one_sided_book' END AS excluded_reason,  -- NULL = paired
       outcome_known_ts AS scored_at                             -- when the outcome was first recorded
FROM s;

SET preserve_insertion_order = false;
