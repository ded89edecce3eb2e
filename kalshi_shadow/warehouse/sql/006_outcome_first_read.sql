-- The outcome as first read from the exchange, kept beside the latest one. Decisions (cash, the haircut) use what
-- was known when they were made; a later amendment moves the log's realised PnL and the scores, never the inputs
-- of decisions already made. Set once by the settlements step (kalshi_shadow/scoring/settlements.py).
ALTER TABLE kalshi_contracts ADD COLUMN IF NOT EXISTS first_outcome VARCHAR;               -- yes | no | scalar | void
ALTER TABLE kalshi_contracts ADD COLUMN IF NOT EXISTS first_settlement_value DECIMAL(18, 4);
ALTER TABLE kalshi_contracts ADD COLUMN IF NOT EXISTS outcome_known_ts TIMESTAMPTZ;       -- when it was recorded

-- From the observations kept so far: the first one with a usable result, as the settlements step reads it.
UPDATE kalshi_contracts AS c
SET first_outcome = f.result, first_settlement_value = f.paid, outcome_known_ts = f.observed_at
FROM (
    SELECT ticker, arg_min(result, observed_at) AS result, arg_min(paid, observed_at) AS paid, min(observed_at) AS observed_at
    FROM (
        SELECT ticker, observed_at, result,
               CASE result WHEN 'yes' THEN coalesce(settlement_value, 1) WHEN 'no' THEN coalesce(settlement_value, 0)
                           WHEN 'scalar' THEN settlement_value END AS paid
        FROM kalshi_settlement_observations
        WHERE result IN ('yes', 'no', 'scalar', 'void') AND NOT (result = 'scalar' AND settlement_value IS NULL)
    )
    GROUP BY ticker
) AS f
WHERE c.ticker = f.ticker AND c.first_outcome IS NULL;

-- The haircut's evidence is now written when an outcome is first recorded; contracts known before this release
-- whose decisions had not yet run get theirs here, once.
INSERT INTO kalshi_model_errors
SELECT c.ticker, s.model_version, c.outcome_known_ts, count(*), sum(abs(s.p_model - c.first_settlement_value::DOUBLE))
FROM kalshi_contracts AS c JOIN kalshi_edge_snapshots AS s USING (ticker)
WHERE c.first_outcome IS NOT NULL AND c.first_outcome <> 'void' AND s.p_model IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM kalshi_model_errors AS e WHERE e.ticker = c.ticker)
GROUP BY ALL;
