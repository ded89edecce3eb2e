"""The decision log: every rule set decides on the snapshots of its model, in the order the quotes were seen.

**Point in time.** A decision on a quote seen at t uses the snapshot (priced from what was known at t), the rule
set, and what was known before t: positions, caps and cool-downs from earlier takes, cash from their costs and from
payouts of contracts whose outcome was recorded before t (as first read: an amendment does not rewrite the past),
and a haircut from the model's error on contracts whose outcome was recorded before t.

**Exactly once, in order.** Each rule set version has a frontier (seen time) in its stored state (`state.py`). A
run decides the snapshots seen in (frontier, target], where the target is the pricing frontier held back by the
quotes' own file sequence: every quote seen by then is priced, so no snapshot can appear behind the frontier, and a
re-run or a replay gives the same log. A new or edited version, or `rerun_from`, replays history; the log of other
versions is never touched.

**Flat cost.** A chunk reads its own snapshots, the state at its start (cash, exposure), the positions of the events
and days it touches, the payouts still to come, the model's errors of the haircut window and, for the tape, the log
rows of its contracts' lifetimes: nothing scales with the length of history, so a tick costs what is new and a
replay of D days costs D times a day.

**How.** One SQL query per chunk evaluates the stateless rules (`rules.STATELESS`) on every snapshot. Only the
snapshots that pass them all, the candidates, go through the stateful rules and sizing, in time order (a loop over
candidates, not over quotes: a position, a cap or cash depends on the takes before). A skip is written when a
contract's reason changes, so the log is a tape, not a copy of the snapshots.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa

from kalshi_shadow.decisions import rules, state
from kalshi_shadow.decisions.rulesets import RuleSet
from kalshi_shadow.decisions.sizing import size_take
from kalshi_shadow.pricing.snapshots import NEG_INF, seq_range
from kalshi_shadow.warehouse.connection import transaction

log = logging.getLogger(__name__)

CHUNK = timedelta(hours=6)  # seen time decided per transaction: bounds memory on a replay of long history
SETTLED_KEY = "kalshi_would_trades.settled_through_us"  # observations folded into the log's outcomes, by observed_at
TAPE_MARGIN = timedelta(hours=1)  # before a contract's first sighting, where its earliest log row may lie

CANDIDATES_SQL = """
CREATE OR REPLACE TEMP TABLE _cand AS
WITH s AS (
    SELECT s.*, CASE WHEN coalesce(ev_yes, -1e9) >= coalesce(ev_no, -1e9) THEN 'yes' ELSE 'no' END AS side
    FROM kalshi_edge_snapshots AS s
    WHERE s.model_version = $model AND {chunk_rows} AND s.snapshot_seq BETWEEN $seq_lo AND $seq_hi
      AND s.ticker NOT IN (SELECT ticker FROM kalshi_decision_positions WHERE rule_set_version = $version)
), errors AS (  -- cumulative evidence of the window, so any window is a difference of two ASOF lookups
    SELECT known_ts, sum(n) OVER w AS cum_n, sum(sum_abs_error) OVER w AS cum_err
    FROM kalshi_model_errors
    WHERE model_version = $model AND known_ts > $lo - to_seconds($window_seconds) AND known_ts < $hi
    WINDOW w AS (ORDER BY known_ts, ticker ROWS UNBOUNDED PRECEDING)
), h AS (
    SELECT s.*, (e1.cum_err - coalesce(e0.cum_err, 0)) / nullif(e1.cum_n - coalesce(e0.cum_n, 0), 0) AS recent_mae
    FROM s
    ASOF LEFT JOIN errors AS e1 ON s.seen_ts > e1.known_ts
    ASOF LEFT JOIN errors AS e0 ON s.seen_ts - to_seconds($window_seconds) > e0.known_ts
), c AS (
    SELECT snapshot_id, seen_ts, (seen_ts AT TIME ZONE 'UTC')::DATE AS decision_date, ticker, series_ticker, event_ticker,
           p_model, tau_seconds, spot_age_seconds, quote_age_seconds, yes_bid, yes_ask, fee_type, fee_multiplier, side,
           trading_active, quote_key, quote_ts,
           CASE side WHEN 'yes' THEN p_model ELSE 1 - p_model END AS p_side,
           CASE side WHEN 'yes' THEN yes_ask ELSE no_ask END AS ask,
           CASE side WHEN 'yes' THEN yes_ask_size ELSE yes_bid_size END AS ask_size,  -- the NO ask is the YES bid
           $haircut_k * coalesce(recent_mae, 0) AS haircut,
           CASE side WHEN 'yes' THEN ev_yes ELSE ev_no END - $haircut_k * coalesce(recent_mae, 0) AS ev_per_contract
    FROM h
)
SELECT c.*, {first_blocking} AS reason FROM c
"""

# The quotes a chunk decides on: seen in it (a quote is sent before it is seen: the quote_ts bound prunes by date).
CHUNK_ROWS = "seen_ts > $lo AND seen_ts <= $hi AND quote_ts > $lo - INTERVAL 1 DAY AND quote_ts <= $hi"

# The candidates that pass every stateless rule, in seen order, with their contract's outcome as first recorded and,
# where the quote carries depth (the book stream), the asks of the side bought: a YES buyer takes the NO bids at
# 1 - price, a NO buyer the YES bids.
CANDIDATE_ROWS_SQL = """
SELECT c.snapshot_id::VARCHAR AS snapshot_id, c.seen_ts, c.decision_date, c.ticker, c.event_ticker, c.side, c.p_side,
       c.ask, c.ask_size, c.haircut, c.ev_per_contract, c.fee_type, c.fee_multiplier,
       k.outcome_known_ts, k.first_outcome, k.first_settlement_value::DOUBLE AS first_y,
       list_transform(CASE c.side WHEN 'yes' THEN q.no_bid_levels ELSE q.yes_bid_levels END,
                      lambda l: [(1 - l.price)::VARCHAR, l.size::VARCHAR]) AS ask_levels
FROM _cand AS c LEFT JOIN (SELECT * FROM kalshi_contracts                          -- a candidate's contract is open
                           WHERE close_ts > $lo - INTERVAL 2 DAY OR close_ts IS NULL) AS k
    ON k.ticker = c.ticker AND k.first_outcome IS NOT NULL
LEFT JOIN (SELECT ts, quote_key, yes_bid_levels, no_bid_levels FROM kalshi_quotes   -- the candidates' quote times only
           WHERE ts >= $qlo AND ts <= $qhi AND (yes_bid_levels IS NOT NULL OR no_bid_levels IS NOT NULL)) AS q
    ON q.quote_key = c.quote_key AND q.ts = c.quote_ts
WHERE c.reason IS NULL
ORDER BY c.seen_ts, c.snapshot_id
"""
CANDIDATE_COLUMNS = ("snapshot_id", "seen_ts", "decision_date", "ticker", "event_ticker", "side", "p_side", "ask",
                     "ask_size", "haircut", "ev_per_contract", "fee_type", "fee_multiplier", "known_ts", "outcome", "y",
                     "levels")


@dataclass
class DecisionRun:
    rule_set: str
    version: str
    frontier: datetime | None = None
    snapshots: int = 0
    takes: int = 0
    skips_logged: int = 0
    bad_takes: int = 0          # takes written this run that break a limit (an asset check)
    chunks: int = 0
    caught_up: bool = False     # the frontier reached the target
    reasons: Counter = field(default_factory=Counter)


def payout(outcome: str, y: float | None, side: str, contracts: int, cost: float) -> float:
    """Dollars a position paid: YES gets y per contract, NO gets 1 - y; a void contract returns its cost."""
    if outcome == "void":
        return cost
    return contracts * (y if side == "yes" else 1.0 - y)


# The same rule in SQL, for take `t` with outcome `o` and dollars per YES contract `y`: the positions' payouts (first
# read) and the log's payout and realised PnL (latest; payout - cost, so 0 for a void contract) come from it.
PAYOUT_SQL = "CASE WHEN {o} = 'void' THEN {t}.cost ELSE {t}.contracts * CASE {t}.side WHEN 'yes' THEN {y} ELSE 1 - {y} END END"


def money(x: float) -> float:
    """Cash and exposure rounded to a millionth of a dollar after every change. Prices and payouts are whole
    ten-thousandths, so this keeps the exact sum whatever the order of the additions: a replay, which starts from
    a state summed in another order, then writes the same figures as the live run did."""
    return round(x, 6)


@dataclass
class _Book:
    """What earlier takes of one rule set version imply during a chunk: the state the stateful rules read. Every
    change of cash or exposure is kept as a flow, so the skips of the chunk get the bankroll of their moment."""
    cash: float
    exposure: float
    start: datetime
    taken: set[str] = field(default_factory=set)
    event_takes: Counter = field(default_factory=Counter)
    event_stake: Counter = field(default_factory=Counter)
    day_takes: Counter = field(default_factory=Counter)
    last_take: dict[str, datetime] = field(default_factory=dict)
    credits: list[tuple[datetime, float, float]] = field(default_factory=list)  # heap of (known_ts, payout, cost)
    flows: dict[datetime, tuple[float, float]] = field(default_factory=dict)     # ts -> (cash, exposure) after it
    new_positions: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.flows[self.start] = (self.cash, self.exposure)

    def settle_until(self, t: datetime, *, inclusive: bool = False) -> None:
        while self.credits and (self.credits[0][0] < t or (inclusive and self.credits[0][0] == t)):
            known_ts, paid, cost = heapq.heappop(self.credits)
            self.cash, self.exposure = money(self.cash + paid), money(self.exposure - cost)
            self.flows[max(known_ts, self.start)] = (self.cash, self.exposure)

    def take(self, row: dict, contracts: int, cost: float) -> None:
        self.cash, self.exposure = money(self.cash - cost), money(self.exposure + cost)
        self.taken.add(row["ticker"])
        self.event_takes[row["event_ticker"]] += 1
        self.event_stake[row["event_ticker"]] += cost
        self.day_takes[row["decision_date"]] += 1
        self.last_take[row["event_ticker"]] = row["seen_ts"]
        self.flows[row["seen_ts"]] = (self.cash, self.exposure)
        paid = None
        if row["outcome"] is not None:
            paid = payout(row["outcome"], row["y"], row["side"], contracts, cost)
            heapq.heappush(self.credits, (row["known_ts"], paid, cost))
        self.new_positions.append({"ticker": row["ticker"], "event_ticker": row["event_ticker"],
                                   "decision_date": row["decision_date"], "decided_ts": row["seen_ts"], "side": row["side"],
                                   "contracts": contracts, "cost": cost, "known_ts": row["known_ts"], "payout": paid})


def _book(conn: duckdb.DuckDBPyConnection, st: state.VersionState, lo: datetime, cands: list[dict]) -> _Book:
    """The state at the chunk's start, and the positions of the events and days its candidates touch."""
    book = _Book(cash=st.cash, exposure=st.exposure, start=lo)
    v = st.version
    for known_ts, paid, cost in conn.execute("""SELECT known_ts, payout, cost FROM kalshi_decision_positions
                                                WHERE rule_set_version = ? AND known_ts > ?""", [v, lo]).fetchall():
        heapq.heappush(book.credits, (known_ts, paid, cost))
    events = sorted({c["event_ticker"] for c in cands})
    days = sorted({c["decision_date"] for c in cands})
    for event, n, stake, last in conn.execute("""
            SELECT event_ticker, count(*), sum(cost), max(decided_ts) FROM kalshi_decision_positions
            WHERE rule_set_version = ? AND event_ticker IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1""", [v, events]).fetchall():
        book.event_takes[event], book.event_stake[event], book.last_take[event] = n, stake, last
    for day, n in conn.execute("""SELECT decision_date, count(*) FROM kalshi_decision_positions
                                  WHERE rule_set_version = ? AND decision_date IN (SELECT unnest(?::DATE[])) GROUP BY 1""",
                               [v, days]).fetchall():
        book.day_takes[day] = n
    return book


def _stateful(rs: RuleSet, book: _Book, cands: list[dict]) -> list[dict]:
    """Apply the stateful rules and sizing to the candidates, in seen order; returns their decisions."""
    out = []
    for r in cands:
        if r["ticker"] in book.taken:  # one position per contract: nothing more to decide on it
            continue
        book.settle_until(r["seen_ts"])
        d = {"snapshot_id": r["snapshot_id"], "bankroll_before": book.cash, "open_exposure": book.exposure,
             "contracts": None, "fee": None, "cost": None, "ev_actual": r["ev_per_contract"], "reason": None,
             "avg_price": None, "levels_used": None}
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
            levels = [(Decimal(p), float(size)) for p, size in r["levels"]] if r["levels"] else None
            s = size_take(rs, p=r["p_side"], ask=ask, ask_size=float(r["ask_size"]), fee_type=r["fee_type"],
                          fee_multiplier=r["fee_multiplier"], cash=book.cash, event_stake=book.event_stake[event], levels=levels)
            if s.contracts == 0:
                d["reason"] = s.blocked_by
            else:
                ev = r["p_side"] - s.avg_price - s.fee / s.contracts - r["haircut"]  # at the price the walk paid
                if ev < rs.min_ev:
                    d["reason"] = rules.EV_AFTER_ORDER_FEE
                else:
                    d.update(contracts=s.contracts, fee=s.fee, cost=s.cost, ev_actual=ev, avg_price=s.avg_price,
                             levels_used=[{"price": pr, "contracts": k, "size": held} for pr, k, held in s.levels_used])
                    book.take(r, s.contracts, s.cost)
        out.append(d)
    return out


DECIDED_SCHEMA = pa.schema([("snapshot_id", pa.string()), ("bankroll_before", pa.float64()), ("open_exposure", pa.float64()),
                            ("contracts", pa.int32()), ("fee", pa.float64()), ("cost", pa.float64()),
                            ("ev_actual", pa.float64()), ("reason", pa.string()), ("avg_price", pa.float64()),
                            ("levels_used", pa.list_(pa.struct([("price", pa.float64()), ("contracts", pa.int32()),
                                                                ("size", pa.float64())])))])
FLOWS_SCHEMA = pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("cash", pa.float64()), ("exposure", pa.float64())])
POSITION_SCHEMA = pa.schema([("ticker", pa.string()), ("event_ticker", pa.string()), ("decision_date", pa.date32()),
                             ("decided_ts", pa.timestamp("us", tz="UTC")), ("side", pa.string()), ("contracts", pa.int32()),
                             ("cost", pa.float64()), ("known_ts", pa.timestamp("us", tz="UTC")), ("payout", pa.float64())])

# Every row of the chunk (stateless skips and candidates), rows after a contract's take dropped, then only the rows
# whose (action, reason) differs from the contract's previous row, the log's last row before the chunk included
# (looked for within the lifetime of the chunk's contracts only).
INSERT_SQL = """
INSERT INTO kalshi_would_trades BY NAME
WITH rows AS (
    SELECT c.*, coalesce(c.reason, d.reason) AS final_reason,
           CASE WHEN c.reason IS NULL AND d.reason IS NULL AND d.contracts IS NOT NULL THEN 'take' ELSE 'skip' END AS action,
           d.contracts, d.fee, d.cost, coalesce(d.ev_actual, c.ev_per_contract) AS ev_final, d.avg_price, d.levels_used,
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
    FROM kalshi_would_trades
    WHERE rule_set_version = $version AND decided_ts >= $tape_lo AND decided_ts <= $lo
      AND ticker IN (SELECT ticker FROM kept)
    GROUP BY ticker
), changes AS (
    SELECT k.*, action || ':' || coalesce(final_reason, '') AS key,
           lag(action || ':' || coalesce(final_reason, ''), 1, p.key) OVER (PARTITION BY k.ticker ORDER BY k.seen_ts, k.snapshot_id) AS prev_key
    FROM kept AS k LEFT JOIN prior AS p USING (ticker)
)
SELECT $rule_set AS rule_set, $version AS rule_set_version, $model AS model_version, c.seen_ts AS decided_ts, c.decision_date, c.snapshot_id,
       c.ticker, c.series_ticker, c.event_ticker, c.action, c.final_reason AS reason, c.side, c.p_side, c.ask, c.ask_size,
       c.haircut, c.ev_final AS ev_per_contract, c.contracts, c.fee, c.cost, c.avg_price, c.levels_used,
       coalesce(c.loop_bankroll, f.cash) AS bankroll_before, coalesce(c.loop_exposure, f.exposure) AS open_exposure,
       now() AS created_at
FROM changes AS c ASOF LEFT JOIN _flows AS f ON c.seen_ts > f.ts   -- cash and exposure just before the decision
WHERE c.key IS DISTINCT FROM c.prev_key
"""

# The log's outcome and realised PnL of takes, from the contract's latest outcome (amendments land here); found by
# the positions of the given tickers, whose decision times bound the scan of the log.
SETTLE_SQL = """
UPDATE kalshi_would_trades AS w
SET outcome = k.outcome, settled_ts = k.known_ts, payout = {payout}, realised_pnl = {payout} - w.cost
FROM (SELECT p.rule_set_version, p.ticker, p.decided_ts, c.outcome, c.settlement_value::DOUBLE AS y, c.outcome_known_ts AS known_ts
      FROM kalshi_decision_positions AS p JOIN kalshi_contracts AS c USING (ticker)
      WHERE p.ticker IN (SELECT unnest($tickers::VARCHAR[])) AND c.outcome IS NOT NULL) AS k
WHERE w.action = 'take' AND w.decided_ts BETWEEN $lo AND $hi
  AND w.rule_set_version = k.rule_set_version AND w.ticker = k.ticker AND w.decided_ts = k.decided_ts
  AND (w.outcome IS DISTINCT FROM k.outcome OR w.payout IS DISTINCT FROM {payout})
""".format(payout=PAYOUT_SQL.format(t="w", o="k.outcome", y="k.y"))


# A take that breaks a limit (an asset check): more than the book held (the ask's size, or any level walked), levels
# that do not add up to the order, a cost above the cash it had, or no contracts at all.
BAD_TAKE_SQL = """contracts <= 0 OR cost > bankroll_before + 1e-9
    OR (levels_used IS NULL AND contracts > ask_size)
    OR (levels_used IS NOT NULL AND (list_sum(list_transform(levels_used, lambda l: l.contracts)) <> contracts
                                     OR list_bool_or(list_transform(levels_used, lambda l: l.contracts > l.size))))"""


def _settle_tickers(conn: duckdb.DuckDBPyConnection, tickers: list[str]) -> int:
    if not tickers:
        return 0
    lo, hi = conn.execute("""SELECT min(decided_ts), max(decided_ts) FROM kalshi_decision_positions
                             WHERE ticker IN (SELECT unnest(?::VARCHAR[]))""", [tickers]).fetchall()[0]
    if lo is None:
        return 0
    return conn.execute(SETTLE_SQL, {"tickers": tickers, "lo": lo, "hi": hi}).fetchall()[0][0]


def settle(conn: duckdb.DuckDBPyConnection) -> int:
    """Fill outcome and realised PnL of takes whose contract's outcome was recorded (or amended) since the last
    call, found from the observations appended since; returns takes updated."""
    with transaction(conn):
        row = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [SETTLED_KEY]).fetchall()
        since = datetime.fromtimestamp(row[0][0] / 1e6, tz=timezone.utc) if row else NEG_INF
        tickers, newest = conn.execute("""SELECT list(DISTINCT ticker), max(observed_at) FROM kalshi_settlement_observations
                                          WHERE observed_at > ?""", [since]).fetchall()[0]
        if newest is None:
            return 0
        n = _settle_tickers(conn, tickers)
        conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                     [SETTLED_KEY, int(newest.timestamp() * 1e6)])
    return n


def ensure_state(conn: duckdb.DuckDBPyConnection, rs: RuleSet) -> state.VersionState:
    """The version's stored state; a version seen for the first time is registered, to replay history."""
    return state.load(conn, rs.version) or state.register(conn, rs.version, rs.name, rs.model, rs.bankroll)


def _history_start(conn: duckdb.DuckDBPyConnection, model: str) -> datetime | None:
    """Just before the first snapshot of `model` (where a new version's replay starts). Read once per new version."""
    first = conn.execute("""SELECT min(seen_ts) FROM kalshi_edge_snapshots WHERE model_version = $m
                            AND quote_date <= (SELECT min(quote_date) FROM kalshi_edge_snapshots WHERE model_version = $m) + 1""",
                         {"m": model}).fetchall()[0][0]
    return None if first is None else first - timedelta(microseconds=1)


def decide(conn: duckdb.DuckDBPyConnection, rs: RuleSet, *, budget_seconds: float | None = None) -> DecisionRun:
    """Decide every snapshot of `rs.model` seen after the version's frontier, up to the decision target, chunk by
    chunk (each a transaction). With `budget_seconds`, stop after the chunk that uses it up (a replay slice)."""
    run = DecisionRun(rs.name, rs.version)
    st = ensure_state(conn, rs)
    goal = state.target(conn)
    if goal is None or goal <= NEG_INF:
        run.frontier = st.frontier
        return run
    if st.frontier is None:
        start = _history_start(conn, rs.model)
        if start is None:  # nothing priced for this model yet
            return run
        st.frontier = st.replay_from = start
    started = time.monotonic()
    while st.frontier < goal:
        hi = min(goal, st.frontier + CHUNK)
        with transaction(conn):
            _decide_chunk(conn, rs, st, st.frontier, hi, run)
            st.frontier = hi
            if st.frontier >= goal and st.replaying:
                st.replaying = False
                log.info("%s: replay caught up with the live decisions at %s", rs.version, goal.isoformat())
            state.save(conn, st)
        run.chunks += 1
        if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
            break
    run.frontier = st.frontier
    run.caught_up = st.frontier >= goal
    if run.caught_up and st.replaying:  # nothing was left to replay
        st.replaying = False
        state.save(conn, st)
    return run


def _discover_outcomes(conn: duckdb.DuckDBPyConnection, st: state.VersionState, lo: datetime) -> None:
    """Open positions whose outcome has since been recorded get its time and first-read payout. One recorded behind
    the frontier (only if the clock stepped back, or a warehouse from before this was kept) is credited now."""
    late = conn.execute(f"""
        UPDATE kalshi_decision_positions AS p
        SET known_ts = c.outcome_known_ts,
            payout = {PAYOUT_SQL.format(t="p", o="c.first_outcome", y="c.first_settlement_value::DOUBLE")}
        FROM kalshi_contracts AS c
        WHERE p.rule_set_version = ? AND p.known_ts IS NULL AND c.ticker = p.ticker AND c.first_outcome IS NOT NULL
        RETURNING p.ticker, p.known_ts, p.payout, p.cost""", [st.version]).fetchall()
    for ticker, known_ts, paid, cost in late:
        if known_ts <= lo:
            log.warning("%s: outcome of %s recorded at %s, behind the decisions' frontier %s: credited now",
                        st.version, ticker, known_ts.isoformat(), lo.isoformat())
            st.cash, st.exposure = money(st.cash + paid), money(st.exposure - cost)


def _decide_chunk(conn: duckdb.DuckDBPyConnection, rs: RuleSet, st: state.VersionState, lo: datetime, hi: datetime,
                  run: DecisionRun) -> None:
    _discover_outcomes(conn, st, lo)
    params = {"model": rs.model, "lo": lo, "hi": hi, "version": rs.version, "series": list(rs.series),
              "haircut_k": rs.haircut_k, "window_seconds": rs.haircut_window_days * 86400.0,
              "min_tau_seconds": rs.min_tau_seconds, "max_tau_seconds": rs.max_tau_seconds,
              "max_spot_age_seconds": rs.max_spot_age_seconds, "max_quote_age_seconds": rs.max_quote_age_seconds,
              "max_spread": rs.max_spread, "min_ev": rs.min_ev, "min_ask_size": rs.min_ask_size}
    params |= seq_range(conn, CHUNK_ROWS, {"lo": lo, "hi": hi})
    conn.execute(CANDIDATES_SQL.format(first_blocking=rules.first_blocking_sql(), chunk_rows=CHUNK_ROWS), params)
    qlo, qhi = conn.execute("SELECT min(quote_ts), max(quote_ts) FROM _cand WHERE reason IS NULL").fetchall()[0]
    cands = [dict(zip(CANDIDATE_COLUMNS, c))
             for c in conn.execute(CANDIDATE_ROWS_SQL, {"lo": lo, "qlo": qlo or lo, "qhi": qhi or lo}).fetchall()]
    book = _book(conn, st, lo, cands)
    decided = _stateful(rs, book, cands)
    book.settle_until(hi, inclusive=True)  # payouts known by the new frontier are in its cash
    tape_lo = conn.execute("""SELECT min(coalesce(first_seen_ts, open_ts)) FROM kalshi_contracts
                              WHERE (close_ts > ? - INTERVAL 2 DAY OR close_ts IS NULL)
                                AND ticker IN (SELECT DISTINCT ticker FROM _cand)""", [lo]).fetchall()[0][0]
    tape_lo = min(tape_lo, lo) - TAPE_MARGIN if tape_lo is not None else lo - timedelta(days=1)
    flows = sorted(book.flows.items())
    conn.register("_decided", pa.Table.from_pylist(decided, schema=DECIDED_SCHEMA))
    conn.register("_flows", pa.table({"ts": [t for t, _ in flows], "cash": [c for _, (c, _) in flows],
                                      "exposure": [e for _, (_, e) in flows]}, schema=FLOWS_SCHEMA))
    conn.register("_positions", pa.Table.from_pylist(book.new_positions, schema=POSITION_SCHEMA))
    try:
        conn.execute(INSERT_SQL, {"version": rs.version, "rule_set": rs.name, "model": rs.model, "lo": lo, "tape_lo": tape_lo})
        conn.execute("INSERT INTO kalshi_decision_positions SELECT ?, * FROM _positions", [rs.version])
    finally:
        for name in ("_decided", "_flows", "_positions"):
            conn.unregister(name)
    _settle_tickers(conn, [p["ticker"] for p in book.new_positions if p["payout"] is not None])
    st.cash, st.exposure = book.cash, book.exposure
    run.snapshots += conn.execute("SELECT count(*) FROM _cand").fetchall()[0][0]
    for action, reason, k, bad in conn.execute("""
            SELECT action, coalesce(reason, ''), count(*),
                   count(*) FILTER (WHERE action = 'take' AND ({bad}))
            FROM kalshi_would_trades WHERE rule_set_version = ? AND decided_ts > ? AND decided_ts <= ? GROUP BY ALL""".format(bad=BAD_TAKE_SQL),
                                                [rs.version, lo, hi]).fetchall():
        run.bad_takes += bad
        if action == "take":
            run.takes += k
        else:
            run.skips_logged += k
            run.reasons[reason] += k
    conn.execute("DROP TABLE _cand")


def rerun_from(conn: duckdb.DuckDBPyConnection, rs: RuleSet, start: datetime) -> int:
    """Forget a version's decisions after `start` and rewind its state there, so that they are replayed (off the
    live path, in slices); returns log rows removed."""
    with transaction(conn):
        st = ensure_state(conn, rs)
        removed = conn.execute("DELETE FROM kalshi_would_trades WHERE rule_set_version = ? AND decided_ts > ?",
                               [rs.version, start]).fetchall()[0][0]
        if st.frontier is None or st.frontier <= start:
            return removed
        conn.execute("DELETE FROM kalshi_decision_positions WHERE rule_set_version = ? AND decided_ts > ?", [rs.version, start])
        cost, paid, exposure = conn.execute("""
            SELECT coalesce(sum(cost), 0), coalesce(sum(payout) FILTER (WHERE known_ts <= $t), 0),
                   coalesce(sum(cost) FILTER (WHERE known_ts IS NULL OR known_ts > $t), 0)
            FROM kalshi_decision_positions WHERE rule_set_version = $v""", {"v": rs.version, "t": start}).fetchall()[0]
        st.frontier, st.cash, st.exposure = start, money(st.bankroll - cost + paid), money(exposure)
        st.replaying, st.replay_from, st.replay_started_at = True, start, datetime.now(timezone.utc)
        state.save(conn, st)
    return removed


def cash_mismatches(conn: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """Versions whose stored cash differs from what their positions imply at their frontier (must be none)."""
    rows = conn.execute("""
        SELECT s.rule_set_version, s.cash - (s.bankroll - coalesce(sum(p.cost), 0)
                                              + coalesce(sum(p.payout) FILTER (WHERE p.known_ts <= s.frontier_ts), 0)) AS diff
        FROM kalshi_decision_state AS s LEFT JOIN kalshi_decision_positions AS p USING (rule_set_version)
        GROUP BY s.rule_set_version, s.cash, s.bankroll, s.frontier_ts
        HAVING abs(diff) > 1e-6""").fetchall()
    return dict(rows)
