-- The decision log: what each rule set would have done, one row per decision, append-only and point in time.
-- A take, or a skip with its reason; a skip is written only when a contract's reason changes, so the log reads as
-- a tape. Settlement fills in the outcome and the realised PnL of takes. Shadow only: nothing here is ever sent.
CREATE TABLE IF NOT EXISTS kalshi_would_trades (
    decision_id       UUID NOT NULL,          -- md5_number(rule_set_version | snapshot_id): a re-run writes the same ids
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
    outcome           VARCHAR,                -- filled at settlement: yes | no | scalar | void
    payout            DOUBLE,                 -- dollars the position paid (void: the cost back)
    realised_pnl      DOUBLE,                 -- payout - cost: net of the per-order fee
    settled_ts        TIMESTAMPTZ,            -- when the outcome was first read from the exchange
    created_at        TIMESTAMPTZ NOT NULL
);

-- The model's error on each settled contract, written once when its outcome is first read: the evidence of the
-- haircut (EV minus k times the recent mean absolute error), looked up by known_ts so only contracts settled before
-- a decision count.
CREATE TABLE IF NOT EXISTS kalshi_model_errors (
    ticker        VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    known_ts      TIMESTAMPTZ NOT NULL,     -- when the outcome was first read from the exchange
    n             BIGINT NOT NULL,          -- priced snapshots of the contract
    sum_abs_error DOUBLE NOT NULL           -- sum of |p_model - y| over them
);

-- Takes not yet settled, per rule set version.
CREATE OR REPLACE VIEW kalshi_open_positions AS
SELECT rule_set, rule_set_version, ticker, series_ticker, event_ticker, side, contracts, ask, fee, cost, decided_ts,
       ev_per_contract, p_side
FROM kalshi_would_trades
WHERE action = 'take' AND outcome IS NULL;

-- Each rule set version's cash and equity over time: a row at every take (cash out) and every settlement (cash in).
CREATE OR REPLACE VIEW kalshi_bankroll AS
WITH start AS (
    SELECT rule_set_version, any_value(bankroll_before ORDER BY decided_ts) AS start_cash
    FROM kalshi_would_trades GROUP BY 1
), flows AS (
    SELECT rule_set, rule_set_version, decided_ts AS ts, 'take' AS event, ticker, -cost AS cash_flow, cost AS exposure_flow
    FROM kalshi_would_trades WHERE action = 'take'
    UNION ALL
    SELECT rule_set, rule_set_version, settled_ts, 'settle', ticker, payout, -cost
    FROM kalshi_would_trades WHERE action = 'take' AND settled_ts IS NOT NULL
)
SELECT f.rule_set, f.rule_set_version, row_number() OVER w AS step, f.ts, f.event, f.ticker,
       s.start_cash + sum(f.cash_flow) OVER w AS cash,
       sum(f.exposure_flow) OVER w AS open_exposure,
       s.start_cash + sum(f.cash_flow) OVER w + sum(f.exposure_flow) OVER w AS equity_at_cost
FROM flows AS f JOIN start AS s USING (rule_set_version)
WINDOW w AS (PARTITION BY f.rule_set_version ORDER BY f.ts, f.event, f.ticker ROWS UNBOUNDED PRECEDING);
