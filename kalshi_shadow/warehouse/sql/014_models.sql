-- Models as plugins (issue 18). Every model prices from the same point-in-time inputs; two more are stored per
-- snapshot, for the market-anchored model and for anyone checking it: how long the book had stood still when the
-- quote was seen, and how far the index had moved since (log return).
ALTER TABLE kalshi_edge_snapshots ADD COLUMN IF NOT EXISTS book_age_seconds DOUBLE;
ALTER TABLE kalshi_edge_snapshots ADD COLUMN IF NOT EXISTS index_move DOUBLE;

-- Fits of models that learn from settled outcomes (models/recalibrated.py), one per model, series and refit time,
-- written once and never recomputed: a backfill reads the fit the live run made. NULL a/b: too little data then.
CREATE TABLE IF NOT EXISTS kalshi_model_fits (
    model_version VARCHAR NOT NULL,
    series_ticker VARCHAR NOT NULL,
    refit_ts      TIMESTAMPTZ NOT NULL,   -- the boundary: trained on outcomes known, and quotes seen, before it
    a             DOUBLE,                 -- P = sigmoid(a + b * logit(p_champion))
    b             DOUBLE,
    n_rows        BIGINT NOT NULL,        -- training snapshots
    n_events      BIGINT NOT NULL,        -- settled events among them
    fitted_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (model_version, series_ticker, refit_ts)
);

-- The score summary ranks every model against the mid honestly (issue 18):
--   * each cell's Brier skill vs the mid carries a 95% interval clustered by event (the contracts of one event settle
--     on one path, so their rows are not independent): delta method on the ratio of summed scores, per-event sums;
--     `verdict` says "beats the mid" only where the interval is above zero;
--   * would-trade PnL and predicted EV come from the decision log's takes (per contract, settled takes of rule sets
--     deciding on this model, at the snapshot's time to close), not from every snapshot that passed the filters,
--     which counted one contract once per poll.
CREATE OR REPLACE VIEW kalshi_score_summary AS
WITH x AS (
    SELECT s.*, c.event_ticker,
           CASE WHEN s.tau_seconds < 60 THEN '0-1m' WHEN s.tau_seconds < 900 THEN '1-15m' WHEN s.tau_seconds < 3600 THEN '15-60m'
                WHEN s.tau_seconds < 6 * 3600 THEN '1-6h' ELSE '6h+' END AS horizon
    FROM kalshi_edge_snapshot_scores AS s JOIN kalshi_contracts AS c USING (ticker)
), cell AS (
    SELECT series_ticker, model_version, horizon,
           count(*) FILTER (WHERE excluded_reason IS NULL) AS n_paired,
           count(DISTINCT event_ticker) FILTER (WHERE excluded_reason IS NULL) AS n_events,
           avg(brier_model) FILTER (WHERE excluded_reason IS NULL) AS brier_model,
           avg(brier_mid) FILTER (WHERE excluded_reason IS NULL) AS brier_mid,
           sum(brier_model) FILTER (WHERE excluded_reason IS NULL) / nullif(sum(brier_mid) FILTER (WHERE excluded_reason IS NULL), 0) AS ratio,
           sum(brier_mid) FILTER (WHERE excluded_reason IS NULL) AS sum_mid,
           avg(logloss_model) FILTER (WHERE excluded_reason IS NULL) AS logloss_model,
           avg(logloss_mid) FILTER (WHERE excluded_reason IS NULL) AS logloss_mid,
           count(*) FILTER (WHERE excluded_reason IN ('one_sided_book')) AS n_one_sided,
           count(*) FILTER (WHERE excluded_reason = 'model_unpriced') AS n_model_unpriced,
           count(*) FILTER (WHERE excluded_reason = 'void') AS n_void,
           count(*) FILTER (WHERE p_model IS NOT NULL AND outcome <> 'void') AS n_model_priced,
           avg(brier_model) FILTER (WHERE p_model IS NOT NULL AND outcome <> 'void') AS brier_model_all,
           count(*) FILTER (WHERE len(reasons) = 0) AS n_would_trade
    FROM x GROUP BY ALL
), per_event AS (
    SELECT series_ticker, model_version, horizon, event_ticker, sum(brier_model) AS bm, sum(brier_mid) AS bk
    FROM x WHERE excluded_reason IS NULL GROUP BY ALL
), spread AS (  -- the ratio's variance from per-event residuals, with the small-sample factor G / (G - 1)
    SELECT e.series_ticker, e.model_version, e.horizon,
           sqrt(any_value(c.n_events) / (any_value(c.n_events) - 1) * sum(((e.bm - c.ratio * e.bk) / c.sum_mid) ^ 2)) AS se
    FROM per_event AS e JOIN cell AS c USING (series_ticker, model_version, horizon)
    WHERE c.n_events > 1 GROUP BY ALL
), takes AS (
    SELECT t.series_ticker, t.model_version, x.horizon, count(*) AS n_takes,
           sum(t.realised_pnl) FILTER (WHERE t.realised_pnl IS NOT NULL) / nullif(sum(t.contracts) FILTER (WHERE t.realised_pnl IS NOT NULL), 0) AS pnl,
           sum(t.ev_per_contract * t.contracts) FILTER (WHERE t.realised_pnl IS NOT NULL) / nullif(sum(t.contracts) FILTER (WHERE t.realised_pnl IS NOT NULL), 0) AS ev
    FROM kalshi_would_trades AS t JOIN x ON x.snapshot_id = t.snapshot_id
    WHERE t.action = 'take' GROUP BY ALL
)
SELECT c.series_ticker, c.model_version, c.horizon, c.n_paired, c.n_events, c.brier_model, c.brier_mid,
       1 - c.ratio AS brier_skill_vs_mid, 1 - c.ratio - 1.96 * s.se AS brier_skill_lo, 1 - c.ratio + 1.96 * s.se AS brier_skill_hi,
       CASE WHEN s.se IS NULL THEN 'too few events' WHEN 1 - c.ratio - 1.96 * s.se > 0 THEN 'beats the mid'
            WHEN 1 - c.ratio + 1.96 * s.se < 0 THEN 'worse than the mid' ELSE 'no detectable difference' END AS verdict,
       c.logloss_model, c.logloss_mid, c.n_one_sided, c.n_model_unpriced, c.n_void, c.n_model_priced, c.brier_model_all,
       c.n_would_trade, coalesce(t.n_takes, 0) AS n_takes, t.pnl AS realised_pnl_per_contract, t.ev AS predicted_ev_per_contract
FROM cell AS c
LEFT JOIN spread AS s USING (series_ticker, model_version, horizon)
LEFT JOIN takes AS t USING (series_ticker, model_version, horizon);
