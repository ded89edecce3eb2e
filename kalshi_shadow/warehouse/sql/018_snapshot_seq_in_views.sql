-- The snapshot views expose `snapshot_seq`. DuckDB 2.0's join filter from the quotes to the model rows does not
-- prune row groups, so a time filter on kalshi_edge_snapshots read every model row ever stored (0.39 s on 8 days of
-- history, growing with each day). A filter on snapshot_seq is pushed into both tables and prunes both: readers
-- that need speed take the seq range of their quotes first (pricing/snapshots.py: seq_range) and filter on it.

CREATE OR REPLACE VIEW kalshi_edge_snapshots AS
SELECT xor(q.quote_key::UHUGEINT, md5_number(m.model_version))::UUID AS snapshot_id,  -- unique per (quote, model)
       q.quote_key, q.quote_date, q.ticker, q.series_ticker, q.event_ticker, m.model_version, q.quote_ts, q.seen_ts,
       q.quote_source, q.created_at, q.status, q.strike_type, q.floor_strike, q.cap_strike, q.close_ts, q.tau_seconds,
       q.spot, q.spot_ts, q.spot_age_seconds, q.vol, q.yes_bid, q.yes_ask, q.no_bid, q.no_ask, q.yes_bid_size,
       q.yes_ask_size, q.quote_age_seconds, q.window_mean, q.lot_size, q.fee_type, q.fee_multiplier, q.fee_yes, q.fee_no,
       m.p_model, q.p_mid,
       m.p_model - q.p_mid AS model_minus_mid,
       m.p_model - q.yes_ask::DOUBLE - q.fee_yes AS ev_yes,
       (1 - m.p_model) - q.no_ask::DOUBLE - q.fee_no AS ev_no,
       list_concat(q.quote_reasons, m.model_reasons) AS reasons,
       q.rules_version, q.index_source, q.book_age_seconds, q.index_move, q.trading_active,
       q.snapshot_seq  -- a filter on it prunes both tables (pricing/snapshots.py: seq_range)
FROM kalshi_edge_snapshot_quotes AS q JOIN kalshi_edge_snapshot_models AS m USING (snapshot_seq);

CREATE OR REPLACE VIEW kalshi_edges AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY ticker, model_version ORDER BY quote_ts DESC) AS rn
    FROM kalshi_edge_snapshots
    WHERE quote_date >= CAST(now() AT TIME ZONE 'UTC' AS DATE) - 1
) WHERE rn = 1;

CREATE OR REPLACE VIEW kalshi_edge_snapshot_scores AS
WITH s AS (
    SELECT s.snapshot_id, s.quote_date, s.ticker, s.series_ticker, s.model_version, s.quote_ts, s.tau_seconds,
           c.outcome, CASE WHEN c.outcome <> 'void' THEN c.settlement_value::DOUBLE END AS y, s.p_model, s.p_mid,
           least(greatest(s.p_model, 1e-6), 1 - 1e-6) AS pm, least(greatest(s.p_mid, 1e-6), 1 - 1e-6) AS pk,
           s.yes_ask, s.no_ask, s.fee_yes, s.fee_no, s.ev_yes, s.ev_no, s.reasons, c.outcome_known_ts, s.snapshot_seq
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
       outcome_known_ts AS scored_at,                            -- when the outcome was first recorded
       snapshot_seq
FROM s;
