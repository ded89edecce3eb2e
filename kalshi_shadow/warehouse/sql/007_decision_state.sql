-- The decision engine's running state (kalshi_shadow/decisions/state.py): where each rule set version stands and
-- what its next decision starts from, so a tick reads what is new since the last one, never the whole log.
CREATE TABLE IF NOT EXISTS kalshi_decision_state (
    rule_set_version  VARCHAR PRIMARY KEY,
    rule_set          VARCHAR NOT NULL,
    model_version     VARCHAR NOT NULL,
    bankroll          DOUBLE NOT NULL,        -- starting cash
    frontier_ts       TIMESTAMPTZ,            -- every snapshot seen at or before it is decided; NULL: nothing yet
    cash              DOUBLE NOT NULL,        -- bankroll - cost of every take + payouts known by frontier_ts
    open_exposure     DOUBLE NOT NULL,        -- cost of takes whose payout is not known by frontier_ts
    replaying         BOOLEAN NOT NULL,       -- a new or edited set, or rerun_from: history is replayed off the live path
    replay_from_ts    TIMESTAMPTZ,            -- seen time the replay started from (for progress)
    replay_started_at TIMESTAMPTZ,            -- wall time it started
    updated_at        TIMESTAMPTZ NOT NULL
);

-- One row per take: the positions, caps and cool-downs the stateful rules read, and each payout as first read
-- (point in time: an amendment moves the log's realised PnL, not the cash earlier decisions saw).
CREATE TABLE IF NOT EXISTS kalshi_decision_positions (
    rule_set_version VARCHAR NOT NULL,
    ticker           VARCHAR NOT NULL,
    event_ticker     VARCHAR NOT NULL,
    decision_date    DATE NOT NULL,
    decided_ts       TIMESTAMPTZ NOT NULL,
    side             VARCHAR NOT NULL,
    contracts        INTEGER NOT NULL,
    cost             DOUBLE NOT NULL,
    known_ts         TIMESTAMPTZ,             -- when its outcome was first recorded; NULL: still open
    payout           DOUBLE,                  -- what it paid as first read (void: the cost back)
    PRIMARY KEY (rule_set_version, ticker)
);

-- From a log written before the state was stored: every take, then each version's cash at its frontier.
INSERT INTO kalshi_decision_positions
SELECT w.rule_set_version, w.ticker, w.event_ticker, w.decision_date, w.decided_ts, w.side, w.contracts, w.cost,
       c.outcome_known_ts,
       CASE WHEN c.first_outcome = 'void' THEN w.cost
            ELSE w.contracts * CASE w.side WHEN 'yes' THEN c.first_settlement_value::DOUBLE
                                           ELSE 1 - c.first_settlement_value::DOUBLE END END
FROM kalshi_would_trades AS w LEFT JOIN kalshi_contracts AS c ON c.ticker = w.ticker AND c.first_outcome IS NOT NULL
WHERE w.action = 'take';

INSERT INTO kalshi_decision_state
WITH versions AS (
    SELECT rule_set_version, any_value(rule_set) AS rule_set, any_value(model_version) AS model_version,
           arg_min(bankroll_before, decided_ts) AS bankroll   -- the first decision had nothing before it
    FROM kalshi_would_trades GROUP BY 1
), frontiers AS (
    SELECT substr(asset, length('kalshi_would_trades.frontier_us:') + 1) AS rule_set_version,
           make_timestamp(value)::TIMESTAMPTZ AS frontier_ts
    FROM asset_watermarks WHERE starts_with(asset, 'kalshi_would_trades.frontier_us:')
), books AS (
    SELECT p.rule_set_version, sum(p.cost) AS cost, coalesce(sum(p.payout) FILTER (WHERE p.known_ts <= f.frontier_ts), 0) AS paid,
           coalesce(sum(p.cost) FILTER (WHERE p.known_ts IS NULL OR p.known_ts > f.frontier_ts), 0) AS exposure
    FROM kalshi_decision_positions AS p JOIN frontiers AS f USING (rule_set_version) GROUP BY 1
)
SELECT v.rule_set_version, v.rule_set, v.model_version, v.bankroll, f.frontier_ts,
       round(v.bankroll - coalesce(b.cost, 0) + coalesce(b.paid, 0), 6), round(coalesce(b.exposure, 0), 6), false, NULL, NULL, now()
FROM versions AS v JOIN frontiers AS f USING (rule_set_version) LEFT JOIN books AS b USING (rule_set_version);

DELETE FROM asset_watermarks WHERE starts_with(asset, 'kalshi_would_trades.frontier_us:');

-- Settlement of the log now follows new observations (a watermark); bring every take up to date once.
UPDATE kalshi_would_trades AS w
SET outcome = c.outcome, settled_ts = c.outcome_known_ts,
    payout = CASE WHEN c.outcome = 'void' THEN w.cost
                  ELSE w.contracts * CASE w.side WHEN 'yes' THEN c.settlement_value::DOUBLE ELSE 1 - c.settlement_value::DOUBLE END END,
    realised_pnl = CASE WHEN c.outcome = 'void' THEN 0
                        ELSE w.contracts * CASE w.side WHEN 'yes' THEN c.settlement_value::DOUBLE ELSE 1 - c.settlement_value::DOUBLE END - w.cost END
FROM kalshi_contracts AS c
WHERE w.ticker = c.ticker AND w.action = 'take' AND c.outcome IS NOT NULL;

INSERT INTO asset_watermarks
SELECT 'kalshi_would_trades.settled_through_us', epoch_us(max(observed_at)) FROM kalshi_settlement_observations
HAVING max(observed_at) IS NOT NULL
ON CONFLICT (asset) DO UPDATE SET value = excluded.value;
