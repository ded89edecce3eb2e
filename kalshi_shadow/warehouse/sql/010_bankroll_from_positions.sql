-- Each rule set version's cash and equity over time, from its positions (one row per take) rather than from the
-- whole decision log: a row at every take (cash out) and every payout as first read (cash in), the same cash the
-- decisions saw. Reading it costs the takes, not the months of skips logged beside them.
CREATE OR REPLACE VIEW kalshi_bankroll AS
WITH flows AS (
    SELECT rule_set_version, decided_ts AS ts, 'take' AS event, ticker, -cost AS cash_flow, cost AS exposure_flow
    FROM kalshi_decision_positions
    UNION ALL
    SELECT rule_set_version, known_ts, 'settle', ticker, payout, -cost
    FROM kalshi_decision_positions WHERE known_ts IS NOT NULL
)
SELECT s.rule_set, f.rule_set_version, row_number() OVER w AS step, f.ts, f.event, f.ticker,
       s.bankroll + sum(f.cash_flow) OVER w AS cash,
       sum(f.exposure_flow) OVER w AS open_exposure,
       s.bankroll + sum(f.cash_flow) OVER w + sum(f.exposure_flow) OVER w AS equity_at_cost
FROM flows AS f JOIN kalshi_decision_state AS s USING (rule_set_version)
WINDOW w AS (PARTITION BY f.rule_set_version ORDER BY f.ts, f.event, f.ticker ROWS UNBOUNDED PRECEDING);
