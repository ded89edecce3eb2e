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

-- How each ticker has been read for its outcome, kept here so that backoff and giving up survive restarts. A ticker
-- whose reads bring nothing new (not returned, or the same unfinished answer) waits longer between reads; past the
-- give-up bound after close it is flagged and no longer read. Flagged tickers: SELECT * ... WHERE flag IS NOT NULL.
CREATE TABLE IF NOT EXISTS kalshi_settlement_reads (
    ticker        VARCHAR PRIMARY KEY,
    reads         INTEGER NOT NULL,          -- every read of this ticker
    stale_reads   INTEGER NOT NULL,          -- reads in a row that brought nothing new; 0 after news
    first_read_at TIMESTAMPTZ NOT NULL,
    last_read_at  TIMESTAMPTZ NOT NULL,
    next_read_at  TIMESTAMPTZ NOT NULL,      -- not read before this, unless a since_seconds re-read asks
    last_status   VARCHAR,                   -- NULL: the exchange did not return the ticker
    last_result   VARCHAR,
    last_value    DECIMAL(18, 4),            -- settlement_value as sent
    flag          VARCHAR,                   -- unknown_to_exchange | never_finalized: given up, no longer read
    flagged_at    TIMESTAMPTZ,
    flag_reason   VARCHAR
);

-- One row per snapshot of a settled contract. Brier and log loss score P(YES) against y, the dollars one YES
-- contract paid (1 / 0, or the scalar value). Log loss clips p to [1e-6, 1 - 1e-6]. PnL is per contract,
-- taking that side at the ask net of the per-order fee. Void contracts keep a row with excluded_reason = 'void'.
CREATE TABLE IF NOT EXISTS kalshi_edge_snapshot_scores (
    snapshot_id     UUID NOT NULL,
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
    excluded_reason VARCHAR,                -- NULL = paired (model and mid both scored); void | model_unpriced | one_sided_book
    scored_at       TIMESTAMPTZ NOT NULL
);

-- The evaluation report: per series, model and time-to-close bucket, model vs market calibration on the same rows,
-- and realised PnL of the trades the rules would have taken against the EV they predicted.
-- Model and mid are averaged only over paired rows (excluded_reason IS NULL: model priced, book two-sided, contract
-- not void), and n_paired says how many. The model alone over every row it priced (one-sided books included) is
-- brier_model_all over n_model_priced: a different population, never to be set beside brier_mid.
CREATE OR REPLACE VIEW kalshi_score_summary AS
SELECT series_ticker, model_version,
       CASE WHEN tau_seconds < 60 THEN '0-1m' WHEN tau_seconds < 900 THEN '1-15m' WHEN tau_seconds < 3600 THEN '15-60m'
            WHEN tau_seconds < 6 * 3600 THEN '1-6h' ELSE '6h+' END AS horizon,
       count(*) FILTER (WHERE excluded_reason IS NULL) AS n_paired,
       avg(brier_model) FILTER (WHERE excluded_reason IS NULL) AS brier_model,
       avg(brier_mid) FILTER (WHERE excluded_reason IS NULL) AS brier_mid,
       1 - avg(brier_model) FILTER (WHERE excluded_reason IS NULL)
           / nullif(avg(brier_mid) FILTER (WHERE excluded_reason IS NULL), 0) AS brier_skill_vs_mid,
       avg(logloss_model) FILTER (WHERE excluded_reason IS NULL) AS logloss_model,
       avg(logloss_mid) FILTER (WHERE excluded_reason IS NULL) AS logloss_mid,
       count(*) FILTER (WHERE excluded_reason IN ('one_sided_book')) AS n_one_sided,
       count(*) FILTER (WHERE excluded_reason = 'model_unpriced') AS n_model_unpriced,
       count(*) FILTER (WHERE excluded_reason = 'void') AS n_void,
       count(*) FILTER (WHERE p_model IS NOT NULL AND outcome <> 'void') AS n_model_priced,
       avg(brier_model) FILTER (WHERE p_model IS NOT NULL AND outcome <> 'void') AS brier_model_all,
       count(*) FILTER (WHERE len(reasons) = 0) AS n_would_trade,
       avg(CASE WHEN coalesce(ev_yes, -1) >= coalesce(ev_no, -1) THEN pnl_yes ELSE pnl_no END)
           FILTER (WHERE len(reasons) = 0) AS realised_pnl_per_contract,
       avg(greatest(ev_yes, ev_no)) FILTER (WHERE len(reasons) = 0) AS predicted_ev_per_contract
FROM kalshi_edge_snapshot_scores
GROUP BY ALL;
