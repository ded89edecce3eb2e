"""The decision log: every rule set decides on the snapshots of its model, in the order the quotes were seen.

**Point in time.** A decision on a quote seen at t uses the snapshot (priced from what was known at t), the rule
set, and what the log holds before t: positions, caps and cool-downs from earlier takes, cash from their costs and
from payouts of contracts whose outcome was read from the exchange before t, and a haircut from the model's error
on contracts whose outcome was read before t.

**Exactly once, in order.** Each rule set version has a frontier (seen time). A run decides the snapshots seen in
(frontier, pricing frontier]: every quote seen by then is priced (`pricing/snapshots.py`), so a late file can no
longer add a snapshot behind the frontier, and a re-run or a backfill gives the same log. A new version starts
from the beginning of the warehouse's history; the log of other versions is never touched.

**How.** One SQL query per chunk evaluates the stateless rules (`rules.STATELESS`) on every snapshot. Only the
snapshots that pass them all, the candidates, go through the stateful rules and sizing, in time order (a loop
over candidates, not over quotes: a position, a cap or cash depends on the takes before). A skip is written when
a contract's reason changes, so the log is a tape, not a copy of the snapshots.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa

from kalshi_shadow.decisions import rules
from kalshi_shadow.decisions.rulesets import RuleSet
from kalshi_shadow.decisions.sizing import size_take
from kalshi_shadow.pricing.snapshots import NEG_INF, STATE_FRONTIER
from kalshi_shadow.warehouse.connection import transaction

CHUNK = timedelta(hours=6)  # seen time decided per transaction: bounds memory on a replay of long history
FRONTIER_KEY = "kalshi_would_trades.frontier_us:"

# When each contract's outcome was first read from the exchange: the moment its payout and its error are known.
KNOWN_SQL = """
CREATE OR REPLACE TEMP TABLE _known AS
SELECT c.ticker, c.event_ticker, c.outcome, c.settlement_value::DOUBLE AS y, o.known_ts
FROM kalshi_contracts AS c
JOIN (SELECT ticker, min(observed_at) AS known_ts FROM kalshi_settlement_observations
      WHERE result IS NOT NULL GROUP BY ticker) AS o USING (ticker)
WHERE c.outcome IS NOT NULL
"""

# The model's mean absolute error per settled contract, written once when the outcome is first known: the
# haircut's evidence, read by time (ASOF) without rescanning snapshots.
ERRORS_SQL = """
INSERT INTO kalshi_model_errors
SELECT k.ticker, s.model_version, k.known_ts, count(*) AS n, sum(abs(s.p_model - k.y)) AS sum_abs_error
FROM _known AS k JOIN kalshi_edge_snapshots AS s USING (ticker)
WHERE k.outcome <> 'void' AND s.p_model IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM kalshi_model_errors AS e WHERE e.ticker = k.ticker)
GROUP BY ALL
"""

CANDIDATES_SQL = """
CREATE OR REPLACE TEMP TABLE _cand AS
WITH s AS (
    SELECT s.*, CASE WHEN coalesce(ev_yes, -1e9) >= coalesce(ev_no, -1e9) THEN 'yes' ELSE 'no' END AS side
    FROM kalshi_edge_snapshots AS s
    WHERE s.model_version = $model AND s.seen_ts > $lo AND s.seen_ts <= $hi
      AND s.quote_ts > $lo - INTERVAL 1 DAY AND s.quote_ts <= $hi   -- a quote is sent before it is seen: prunes by date
      AND s.ticker NOT IN (SELECT ticker FROM kalshi_would_trades WHERE rule_set_version = $version AND action = 'take')
), errors AS (  -- cumulative evidence, so any window is a difference of two ASOF lookups
    SELECT known_ts, sum(n) OVER w AS cum_n, sum(sum_abs_error) OVER w AS cum_err
    FROM kalshi_model_errors WHERE model_version = $model
    WINDOW w AS (ORDER BY known_ts, ticker ROWS UNBOUNDED PRECEDING)
), h AS (
    SELECT s.*, (e1.cum_err - coalesce(e0.cum_err, 0)) / nullif(e1.cum_n - coalesce(e0.cum_n, 0), 0) AS recent_mae
    FROM s
    ASOF LEFT JOIN errors AS e1 ON s.seen_ts > e1.known_ts
    ASOF LEFT JOIN errors AS e0 ON s.seen_ts - to_seconds($window_seconds) > e0.known_ts
), c AS (
    SELECT snapshot_id, seen_ts, (seen_ts AT TIME ZONE 'UTC')::DATE AS decision_date, ticker, series_ticker, event_ticker,
           p_model, tau_seconds, spot_age_seconds, quote_age_seconds, yes_bid, yes_ask, fee_type, fee_multiplier, side,
           CASE side WHEN 'yes' THEN p_model ELSE 1 - p_model END AS p_side,
           CASE side WHEN 'yes' THEN yes_ask ELSE no_ask END AS ask,
           CASE side WHEN 'yes' THEN yes_ask_size ELSE yes_bid_size END AS ask_size,  -- the NO ask is the YES bid
           $haircut_k * coalesce(recent_mae, 0) AS haircut,
           CASE side WHEN 'yes' THEN ev_yes ELSE ev_no END - $haircut_k * coalesce(recent_mae, 0) AS ev_per_contract
    FROM h
)
SELECT c.*, {first_blocking} AS reason FROM c
"""


@dataclass
class DecisionRun:
    rule_set: str
    version: str
    frontier: datetime | None = None
    snapshots: int = 0
    takes: int = 0
    skips_logged: int = 0
    reasons: Counter = field(default_factory=Counter)


@dataclass
class _Book:
    """What earlier takes of one rule set version imply at a moment: the state the stateful rules read."""
    cash: float
    taken: set[str] = field(default_factory=set)
    exposure: float = 0.0
    event_takes: Counter = field(default_factory=Counter)
    event_stake: Counter = field(default_factory=Counter)
    day_takes: Counter = field(default_factory=Counter)
    last_take: dict[str, datetime] = field(default_factory=dict)
    credits: list[tuple[datetime, float, float]] = field(default_factory=list)  # heap of (known_ts, payout, cost)

    def settle_until(self, t: datetime) -> None:
        while self.credits and self.credits[0][0] < t:
            _, payout, cost = heapq.heappop(self.credits)
            self.cash += payout
            self.exposure -= cost

    def take(self, row: dict, contracts: int, cost: float, outcome: tuple | None) -> None:
        self.cash -= cost
        self.exposure += cost
        self.taken.add(row["ticker"])
        self.event_takes[row["event_ticker"]] += 1
        self.event_stake[row["event_ticker"]] += cost
        self.day_takes[row["decision_date"]] += 1
        self.last_take[row["event_ticker"]] = row["seen_ts"]
        if outcome is not None:
            heapq.heappush(self.credits, (outcome[0], payout(outcome[1], outcome[2], row["side"], contracts, cost), cost))


def payout(outcome: str, y: float | None, side: str, contracts: int, cost: float) -> float:
    """Dollars a position paid: YES gets y per contract, NO gets 1 - y; a void contract returns its cost."""
    if outcome == "void":
        return cost
    return contracts * (y if side == "yes" else 1.0 - y)


# The same rule in SQL, for take `t` and its outcome `k` (a row of `_known`): the log's payout and realised PnL
# (payout - cost, so 0 for a void contract) and the skips' bankroll come from this one expression.
PAYOUT_SQL = ("CASE WHEN {k}.outcome = 'void' THEN {t}.cost "
              "ELSE {t}.contracts * CASE {t}.side WHEN 'yes' THEN {k}.y ELSE 1 - {k}.y END END")


def _frontier(conn: duckdb.DuckDBPyConnection, key: str) -> datetime | None:
    row = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [key]).fetchall()
    return datetime.fromtimestamp(row[0][0] / 1e6, tz=timezone.utc) if row else None


def _set_frontier(conn: duckdb.DuckDBPyConnection, key: str, value: datetime) -> None:
    conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                 [key, int(value.timestamp() * 1e6)])


def seconds_behind(conn: duckdb.DuckDBPyConnection, versions: list[str] | None = None) -> dict[str, float]:
    """How far each rule set version's decisions trail the pricing frontier, in seconds (inf: it has not decided
    yet); `versions` None means every version that has a frontier. Empty while nothing is priced."""
    target = _frontier(conn, STATE_FRONTIER)
    if target is None:
        return {}
    if versions is None:
        versions = [k[len(FRONTIER_KEY):] for (k,) in conn.execute(
            "SELECT asset FROM asset_watermarks WHERE starts_with(asset, ?)", [FRONTIER_KEY]).fetchall()]
    out = {}
    for v in versions:
        f = _frontier(conn, FRONTIER_KEY + v)
        out[v] = float("inf") if f is None else (target - f).total_seconds()
    return out


def _book(conn: duckdb.DuckDBPyConnection, rs: RuleSet, known: dict[str, tuple]) -> _Book:
    """The state of a version from its log: every take so far, and payouts waiting for their outcome's time."""
    book = _Book(cash=rs.bankroll)
    for ticker, event, day, ts, side, contracts, cost in conn.execute(
            """SELECT ticker, event_ticker, decision_date, decided_ts, side, contracts, cost FROM kalshi_would_trades
               WHERE rule_set_version = ? AND action = 'take' ORDER BY decided_ts""", [rs.version]).fetchall():
        book.take({"ticker": ticker, "event_ticker": event, "decision_date": day, "seen_ts": ts, "side": side},
                  contracts, cost, known.get(ticker))
    return book


def _stateful(rs: RuleSet, book: _Book, cands: list[dict], known: dict[str, tuple]) -> list[dict]:
    """Apply the stateful rules and sizing to the candidates, in seen order; returns their decisions."""
    out = []
    for r in cands:
        if r["ticker"] in book.taken:  # one position per contract: nothing more to decide on it
            continue
        book.settle_until(r["seen_ts"])
        d = {"snapshot_id": r["snapshot_id"], "bankroll_before": book.cash, "open_exposure": book.exposure,
             "contracts": None, "fee": None, "cost": None, "ev_actual": r["ev_per_contract"], "reason": None}
        event = r["event_ticker"]
        last = book.last_take.get(event)
        if last is not None and (r["seen_ts"] - last).total_seconds() < rs.cooldown_seconds:
            d["reason"] = rules.COOLDOWN
        elif book.event_takes[event] >= rs.max_positions_per_event:
            d["reason"] = rules.EVENT_CAP
        elif book.day_takes[r["decision_date"]] >= rs.max_takes_per_day:
            d["reason"] = rules.DAY_CAP
        else:
            ask = Decimal(str(r["ask"]))
            s = size_take(rs, p=r["p_side"], ask=ask, ask_size=float(r["ask_size"]), fee_type=r["fee_type"],
                          fee_multiplier=r["fee_multiplier"], cash=book.cash, event_stake=book.event_stake[event])
            if s.contracts == 0:
                d["reason"] = s.blocked_by
            else:
                ev = r["p_side"] - float(ask) - s.fee / s.contracts - r["haircut"]
                if ev < rs.min_ev:
                    d["reason"] = rules.EV_AFTER_ORDER_FEE
                else:
                    d.update(contracts=s.contracts, fee=s.fee, cost=s.cost, ev_actual=ev)
                    book.take(r, s.contracts, s.cost, known.get(r["ticker"]))
        out.append(d)
    return out


DECIDED_SCHEMA = pa.schema([("snapshot_id", pa.string()), ("bankroll_before", pa.float64()), ("open_exposure", pa.float64()),
                            ("contracts", pa.int32()), ("fee", pa.float64()), ("cost", pa.float64()),
                            ("ev_actual", pa.float64()), ("reason", pa.string())])

# Every row of the chunk (stateless skips and candidates), rows after a contract's take dropped, then only the rows
# whose (action, reason) differs from the contract's previous row, the log's last row before the chunk included.
INSERT_SQL = """
INSERT INTO kalshi_would_trades BY NAME
WITH rows AS (
    SELECT c.*, coalesce(c.reason, d.reason) AS final_reason,
           CASE WHEN c.reason IS NULL AND d.reason IS NULL AND d.contracts IS NOT NULL THEN 'take' ELSE 'skip' END AS action,
           d.contracts, d.fee, d.cost, coalesce(d.ev_actual, c.ev_per_contract) AS ev_final,
           d.bankroll_before AS loop_bankroll, d.open_exposure AS loop_exposure
    FROM _cand AS c LEFT JOIN _decided AS d ON d.snapshot_id = c.snapshot_id::VARCHAR
    WHERE c.reason IS NOT NULL OR d.snapshot_id IS NOT NULL   -- candidates of contracts already held are not decided
), first_take AS (
    SELECT ticker, min(seen_ts) AS take_ts FROM rows WHERE action = 'take' GROUP BY ticker
), kept AS (
    SELECT r.* FROM rows AS r LEFT JOIN first_take AS f USING (ticker)
    WHERE f.take_ts IS NULL OR r.seen_ts <= f.take_ts
), prior AS (
    SELECT ticker, arg_max(action || ':' || coalesce(reason, ''), decided_ts) AS key
    FROM kalshi_would_trades WHERE rule_set_version = $version AND ticker IN (SELECT ticker FROM kept) GROUP BY ticker
), changes AS (
    SELECT k.*, action || ':' || coalesce(final_reason, '') AS key,
           lag(action || ':' || coalesce(final_reason, ''), 1, p.key) OVER (PARTITION BY k.ticker ORDER BY k.seen_ts, k.snapshot_id) AS prev_key
    FROM kept AS k LEFT JOIN prior AS p USING (ticker)
), flows AS (  -- cash and exposure after every take and every payout known, for the skips' bankroll_before
    SELECT ts, sum(cash) OVER w AS cash, sum(exposure) OVER w AS exposure FROM (
        SELECT decided_ts AS ts, -cost AS cash, cost AS exposure FROM kalshi_would_trades
        WHERE rule_set_version = $version AND action = 'take'
        UNION ALL SELECT seen_ts, -cost, cost FROM changes WHERE action = 'take'
        UNION ALL SELECT k.known_ts, {payout}, -t.cost
        FROM (SELECT ticker, side, contracts, cost FROM kalshi_would_trades WHERE rule_set_version = $version AND action = 'take'
              UNION ALL SELECT ticker, side, contracts, cost FROM changes WHERE action = 'take') AS t
        JOIN _known AS k USING (ticker)
    ) WINDOW w AS (ORDER BY ts ROWS UNBOUNDED PRECEDING)
)
SELECT md5_number($version || '|' || c.snapshot_id::VARCHAR)::UUID AS decision_id, $rule_set AS rule_set,
       $version AS rule_set_version, $model AS model_version, c.seen_ts AS decided_ts, c.decision_date, c.snapshot_id,
       c.ticker, c.series_ticker, c.event_ticker, c.action, c.final_reason AS reason, c.side, c.p_side, c.ask, c.ask_size,
       c.haircut, c.ev_final AS ev_per_contract, c.contracts, c.fee, c.cost,
       coalesce(c.loop_bankroll, $bankroll + coalesce(f.cash, 0)) AS bankroll_before,
       coalesce(c.loop_exposure, coalesce(f.exposure, 0)) AS open_exposure,
       now() AS created_at
FROM changes AS c ASOF LEFT JOIN flows AS f ON c.seen_ts > f.ts
WHERE c.key IS DISTINCT FROM c.prev_key
""".format(payout=PAYOUT_SQL.format(t="t", k="k"))

SETTLE_SQL = """
UPDATE kalshi_would_trades AS w
SET outcome = k.outcome, settled_ts = k.known_ts, payout = {payout}, realised_pnl = {payout} - w.cost
FROM _known AS k
WHERE w.ticker = k.ticker AND w.action = 'take' AND w.outcome IS NULL
""".format(payout=PAYOUT_SQL.format(t="w", k="k"))


def _known(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    conn.execute(KNOWN_SQL)
    return {t: (ts, o, y) for t, o, y, ts in conn.execute("SELECT ticker, outcome, y, known_ts FROM _known").fetchall()}


def settle(conn: duckdb.DuckDBPyConnection) -> int:
    """Fill outcome and realised PnL of takes whose outcome is now known; returns takes settled."""
    conn.execute(KNOWN_SQL)
    return conn.execute(SETTLE_SQL).fetchall()[0][0]


def decide(conn: duckdb.DuckDBPyConnection, rs: RuleSet) -> DecisionRun:
    """Decide every snapshot of `rs.model` seen after the version's frontier, up to the pricing frontier."""
    run = DecisionRun(rs.name, rs.version)
    key = FRONTIER_KEY + rs.version
    target = _frontier(conn, STATE_FRONTIER)
    if target is None or target <= NEG_INF:
        return run
    lo = _frontier(conn, key)
    if lo is None:  # a new version: from the start of history
        first = conn.execute("SELECT min(seen_ts) FROM kalshi_edge_snapshots WHERE model_version = ?", [rs.model]).fetchall()[0][0]
        if first is None:
            return run
        lo = first - timedelta(microseconds=1)
    while lo < target:
        hi = min(target, lo + CHUNK)
        with transaction(conn):
            known = _known(conn)
            conn.execute(ERRORS_SQL)
            _decide_chunk(conn, rs, lo, hi, known, run)
            _set_frontier(conn, key, hi)
        lo = hi
    run.frontier = lo
    return run


def _decide_chunk(conn: duckdb.DuckDBPyConnection, rs: RuleSet, lo: datetime, hi: datetime, known: dict[str, tuple],
                  run: DecisionRun) -> None:
    params = {"model": rs.model, "lo": lo, "hi": hi, "version": rs.version, "series": list(rs.series),
              "haircut_k": rs.haircut_k, "window_seconds": rs.haircut_window_days * 86400.0,
              "min_tau_seconds": rs.min_tau_seconds, "max_tau_seconds": rs.max_tau_seconds,
              "max_spot_age_seconds": rs.max_spot_age_seconds, "max_quote_age_seconds": rs.max_quote_age_seconds,
              "max_spread": rs.max_spread, "min_ev": rs.min_ev, "min_ask_size": rs.min_ask_size}
    conn.execute(CANDIDATES_SQL.format(first_blocking=rules.first_blocking_sql()), params)
    cands = conn.execute("""SELECT snapshot_id::VARCHAR AS snapshot_id, seen_ts, decision_date, ticker, event_ticker, side,
                                   p_side, ask, ask_size, haircut, ev_per_contract, fee_type, fee_multiplier
                            FROM _cand WHERE reason IS NULL ORDER BY seen_ts, snapshot_id""").fetchall()
    cols = ["snapshot_id", "seen_ts", "decision_date", "ticker", "event_ticker", "side", "p_side", "ask", "ask_size",
            "haircut", "ev_per_contract", "fee_type", "fee_multiplier"]
    decided = _stateful(rs, _book(conn, rs, known), [dict(zip(cols, c)) for c in cands], known)
    conn.register("_decided", pa.Table.from_pylist(decided, schema=DECIDED_SCHEMA))
    try:
        conn.execute(INSERT_SQL, {"version": rs.version, "rule_set": rs.name, "model": rs.model,
                                      "bankroll": rs.bankroll})
    finally:
        conn.unregister("_decided")
    run.snapshots += conn.execute("SELECT count(*) FROM _cand").fetchall()[0][0]
    for action, reason, k in conn.execute("""SELECT action, coalesce(reason, ''), count(*) FROM kalshi_would_trades
                                             WHERE rule_set_version = ? AND decided_ts > ? AND decided_ts <= ? GROUP BY ALL""",
                                          [rs.version, lo, hi]).fetchall():
        if action == "take":
            run.takes += k
        else:
            run.skips_logged += k
            run.reasons[reason] += k
    conn.execute("DROP TABLE _cand")


def rerun_from(conn: duckdb.DuckDBPyConnection, rs: RuleSet, start: datetime) -> int:
    """Forget a version's decisions from `start` on, so the next `decide` replays them; returns rows removed."""
    with transaction(conn):
        removed = conn.execute("DELETE FROM kalshi_would_trades WHERE rule_set_version = ? AND decided_ts > ?",
                               [rs.version, start]).fetchall()[0][0]
        if _frontier(conn, FRONTIER_KEY + rs.version) is not None:
            _set_frontier(conn, FRONTIER_KEY + rs.version, start)
    return removed
