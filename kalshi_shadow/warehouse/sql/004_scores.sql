-- Every outcome read from the exchange, kept so that disputes and amendments are auditable.
CREATE TABLE IF NOT EXISTS kalshi_settlement_observations (
    ticker           VARCHAR NOT NULL,
    observed_at      TIMESTAMPTZ NOT NULL,
    status           VARCHAR,
    result           VARCHAR,               -- as the exchange sent it ('' -> NULL)
    settlement_value DECIMAL(18, 4),
    expiration_value DECIMAL(18, 8),
    settlement_ts    TIMESTAMPTZ
);

-- One row per snapshot of a settled contract. Brier and log loss score P(YES) against y, the dollars one YES
-- contract paid (1 / 0, or the scalar value). Log loss clips p to [1e-6, 1 - 1e-6]. PnL is per contract,
-- taking that side at the ask net of the per-order fee. Void contracts keep a row with excluded_reason = 'void'.
CREATE TABLE IF NOT EXISTS kalshi_edge_snapshot_scores (
    snapshot_id     VARCHAR NOT NULL,
    quote_date      DATE NOT NULL,
    ticker          VARCHAR NOT NULL,
    series_ticker   VARCHAR NOT NULL,
    model_version   VARCHAR NOT NULL,
    quote_ts        TIMESTAMPTZ NOT NULL,
    tau_seconds     DOUBLE,
    outcome         VARCHAR NOT NULL,       -- yes | no | scalar | void
    y               DOUBLE,                 -- settlement value per YES contract; NULL for void
    p_model         DOUBLE,
    p_mid           DOUBLE,
    brier_model     DOUBLE,
    logloss_model   DOUBLE,
    brier_mid       DOUBLE,
    logloss_mid     DOUBLE,
    pnl_yes         DOUBLE,                 -- y - yes_ask - fee_yes
    pnl_no          DOUBLE,                 -- (1 - y) - no_ask - fee_no
    ev_yes          DOUBLE,                 -- what the snapshot predicted
    ev_no           DOUBLE,
    reasons         VARCHAR[],              -- the snapshot's filter reasons (empty = would have traded)
    excluded_reason VARCHAR,                -- void, or why the model part is missing
    scored_at       TIMESTAMPTZ NOT NULL
);
