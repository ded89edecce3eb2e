"""Outcomes taken from the exchange for each stored ticker, with a history of every observation.

The settlement columns of `kalshi_contracts` follow the newest observation that carries a result. A contract is
re-read until its status is final, so disputes and amendments land; a changed outcome returns the ticker so its
scores are recomputed. Network calls happen while no DuckDB connection is open.

Reads that end: a ticker whose reads bring nothing new (the exchange does not return it, or keeps the same unfinished
answer) waits longer before each next read, and once it is past `KALSHI_SHADOW_SETTLEMENT_GIVE_UP_HOURS` after close
it is flagged in `kalshi_settlement_reads` and no longer read. Nothing is filled in for it: an outcome the exchange
never gave stays NULL, never a default.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterable

import duckdb

from kalshi_shadow.config import env_number
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.kalshi.models import Market
from kalshi_shadow.pricing.snapshots import seq_range
from kalshi_shadow.warehouse.connection import transaction

log = logging.getLogger(__name__)
FINAL_STATUSES = ("finalized",)
RESULT_STATUSES = ("determined", "amended", "finalized", "settled")
BATCH = 100
FIRST_RETRY = timedelta(minutes=1)  # after the first read without news; doubles with each further one
MAX_RETRY = timedelta(hours=1)  # so a late amendment still lands within the hour
GIVE_UP_MIN_READS = 3  # stale reads in a row before a flag, so a pipeline back from downtime still gets to read


@dataclass(frozen=True)
class Observation:
    ticker: str
    status: str
    result: str | None
    settlement_value: Decimal | None
    expiration_value: Decimal | None
    settlement_ts: datetime | None
    source: str = "rest"  # rest (GET /markets) | stream (market_lifecycle_v2)


@dataclass(frozen=True)
class Skip:
    ticker: str
    flag: str | None  # None: backing off, read again later
    reason: str


def plan_reads(conn: duckdb.DuckDBPyConnection, now: datetime, since_seconds: int | None = None) -> tuple[list[str], list[Skip]]:
    """Closed contracts without a final outcome that are due for a read, and the rest with why they are skipped.

    With `since_seconds`, every contract closed in that window is read regardless of backoff or flag: a manual re-read."""
    rows = conn.execute("""
        SELECT c.ticker, ($since IS NOT NULL AND c.close_ts >= $now - to_seconds($since)) AS forced,
               r.flag, r.flag_reason, r.next_read_at, r.stale_reads, r.last_status
        FROM kalshi_contracts AS c LEFT JOIN kalshi_settlement_reads AS r USING (ticker)
        WHERE c.close_ts <= $now
          AND (c.settlement_status IS NULL OR c.settlement_status NOT IN ('finalized') OR forced)
        ORDER BY c.close_ts, c.ticker
    """, {"now": now, "since": since_seconds}).fetchall()
    due, skipped = [], []
    for ticker, forced, flag, flag_reason, next_read_at, stale, last_status in rows:
        if forced or (flag is None and (next_read_at is None or next_read_at <= now)):
            due.append(ticker)
        elif flag is not None:
            skipped.append(Skip(ticker, flag, flag_reason))
        else:
            skipped.append(Skip(ticker, None, f"backing off until {next_read_at.isoformat()} after {stale} reads without news "
                                        f"(last answer: {last_status or 'not returned'})"))
    return due, skipped


def fetch_outcomes(client: KalshiClient, tickers: Iterable[str]) -> list[Observation]:
    tickers = list(tickers)
    out: list[Observation] = []
    for i in range(0, len(tickers), BATCH):
        for m in client.iter_markets(tickers=tickers[i : i + BATCH]):
            out.append(_observation(m))
    return out


def _observation(m: Market) -> Observation:
    return Observation(m.ticker, m.status, m.result, m.settlement_value, m.expiration_value, m.settlement_ts)


def settlement_value(result: str | None, value: Decimal | None) -> Decimal | None:
    """Dollars one YES contract pays; None when there is no usable outcome (void, or scalar without a value)."""
    if result == "yes":
        return value if value is not None else Decimal(1)
    if result == "no":
        return value if value is not None else Decimal(0)
    if result == "scalar":
        return value
    return None


OBS_TABLE_SQL = """CREATE OR REPLACE TEMP TABLE _obs (ticker VARCHAR, observed_at TIMESTAMPTZ, status VARCHAR, result VARCHAR,
    settlement_value DECIMAL(18, 4), expiration_value DECIMAL(18, 8), settlement_ts TIMESTAMPTZ, paid DECIMAL(18, 4),
    source VARCHAR)"""
# An observation that settles the contract: a result the payout rule knows, and a value where one is needed.
USABLE_SQL = "o.result IN ('yes', 'no', 'scalar', 'void') AND NOT (o.result = 'scalar' AND o.paid IS NULL)"


def apply_observations(conn: duckdb.DuckDBPyConnection, observations: list[Observation], now: datetime) -> list[str]:
    """Record observations read at `now` and update contracts; returns tickers whose outcome is new or changed.

    `now` is the observations' `observed_at`: pass the time they are recorded (with the warehouse open), so that a
    decision made before it could not have seen them and one made after it could (point in time)."""
    if not observations:
        return []
    rows = []
    for o in observations:  # at most a few hundred per run: one per contract read from the exchange
        if o.result == "scalar" and o.settlement_value is None:
            log.error("%s: scalar result without settlement_value_dollars; outcome left unset", o.ticker)
        rows.append((o.ticker, now, o.status, o.result, o.settlement_value, o.expiration_value, o.settlement_ts,
                     settlement_value(o.result, o.settlement_value), o.source))
    conn.execute(OBS_TABLE_SQL)
    conn.executemany("INSERT INTO _obs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return record_observations(conn)


def record_observations(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the observations staged in `_obs` (OBS_TABLE_SQL; at most one per ticker) in one transaction: keep them,
    move each contract to its newest outcome, keep its first one, and work out the model's error on contracts whose
    outcome is known for the first time. Returns tickers whose outcome is new or changed."""
    with transaction(conn):
        conn.execute("INSERT INTO kalshi_settlement_observations BY NAME SELECT * EXCLUDE (paid) FROM _obs")
        changed = [r[0] for r in conn.execute(f"""
            SELECT o.ticker FROM _obs AS o JOIN kalshi_contracts AS c USING (ticker)
            WHERE {USABLE_SQL} AND (c.outcome IS DISTINCT FROM o.result OR c.settlement_value IS DISTINCT FROM o.paid)
        """).fetchall()]
        first = [r[0] for r in conn.execute(f"""
            SELECT o.ticker FROM _obs AS o JOIN kalshi_contracts AS c USING (ticker) WHERE {USABLE_SQL} AND c.first_outcome IS NULL
        """).fetchall()]
        conn.execute(f"""
            UPDATE kalshi_contracts AS c SET
                outcome = CASE WHEN {USABLE_SQL} THEN o.result ELSE c.outcome END,
                settlement_value = CASE WHEN {USABLE_SQL} THEN o.paid ELSE c.settlement_value END,
                first_outcome = CASE WHEN c.first_outcome IS NULL AND {USABLE_SQL} THEN o.result ELSE c.first_outcome END,
                first_settlement_value = CASE WHEN c.first_outcome IS NULL AND {USABLE_SQL} THEN o.paid ELSE c.first_settlement_value END,
                outcome_known_ts = CASE WHEN c.first_outcome IS NULL AND {USABLE_SQL} THEN o.observed_at ELSE c.outcome_known_ts END,
                expiration_value = coalesce(o.expiration_value, c.expiration_value),
                settled_ts = coalesce(o.settlement_ts, c.settled_ts),
                settlement_status = o.status,
                settlement_checked_at = o.observed_at,
                status = o.status
            FROM _obs AS o WHERE c.ticker = o.ticker
        """)
        record_model_errors(conn, first)
    conn.execute("DROP TABLE _obs")
    return changed


LIFECYCLE_KEY = "kalshi_settlements.lifecycle_load_id"  # streamed lifecycle rows applied up to this load


def streamed_observations(conn: duckdb.DuckDBPyConnection) -> tuple[list[Observation], int | None]:
    """Outcomes the book stream recorded (`kalshi_lifecycle` determinations and settlements, keyed) since the last
    call, the newest per stored ticker, and the load id they go up to. They land without waiting for a read; the
    status is the lifecycle's ('determined', 'settled'), so REST reads go on until the exchange says finalized."""
    row = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [LIFECYCLE_KEY]).fetchall()
    since = row[0][0] if row else 0
    newest = conn.execute("SELECT max(load_id) FROM kalshi_lifecycle WHERE load_id > ?", [since]).fetchall()[0][0]
    if newest is None:
        return [], None
    rows = conn.execute("""
        SELECT ticker, event_type, result, settlement_value, ts FROM kalshi_lifecycle
        WHERE load_id > ? AND load_id <= ? AND event_type IN ('determined', 'settled') AND result IS NOT NULL
          AND ticker IN (SELECT ticker FROM kalshi_contracts)
        QUALIFY row_number() OVER (PARTITION BY ticker ORDER BY ts DESC, event_type DESC) = 1""", [since, newest]).fetchall()
    return [Observation(t, kind, result, value, None, ts, "stream") for t, kind, result, value, ts in rows], newest


def mark_streamed(conn: duckdb.DuckDBPyConnection, load_id: int) -> None:
    conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                 [LIFECYCLE_KEY, load_id])


# Contracts whose streamed outcome a later REST read contradicts (the check on the stream; should be none).
STREAM_DISAGREES_SQL = """
SELECT count(DISTINCT s.ticker) FROM kalshi_settlement_observations AS s JOIN kalshi_settlement_observations AS r
    ON r.ticker = s.ticker AND r.source = 'rest' AND r.observed_at >= s.observed_at AND r.result IN ('yes', 'no', 'scalar', 'void')
WHERE s.source = 'stream' AND r.result IS DISTINCT FROM s.result
  AND s.observed_at > now() - INTERVAL 7 DAY
  AND r.observed_at > now() - INTERVAL 7 DAY  -- implied by the join; stated so the scan of reads stays a week long
"""


def snapshot_days(conn: duckdb.DuckDBPyConnection, tickers: list[str]) -> tuple[date, date] | None:
    """UTC quote days that can hold snapshots of these contracts, from their terms: from the day before the first was
    seen (or opened) to the day after the last closed (a contract without terms: the week before its outcome was
    recorded). Constant bounds, so a query by them reads those days only."""
    lo, hi = conn.execute("""
        SELECT min(CAST(coalesce(least(first_seen_ts, open_ts), close_ts - INTERVAL 2 DAY, outcome_known_ts - INTERVAL 7 DAY)
                        AT TIME ZONE 'UTC' AS DATE)) - 1,
               max(CAST(coalesce(greatest(close_ts, last_seen_ts), outcome_known_ts, now()) AT TIME ZONE 'UTC' AS DATE)) + 1
        FROM kalshi_contracts WHERE ticker IN (SELECT unnest(?::VARCHAR[]))""", [tickers]).fetchall()[0]
    return None if lo is None else (lo, hi)


# The model's mean absolute error per settled contract, written once, when its outcome is first recorded: the
# haircut's evidence (engine.py reads it by time), against the outcome as first read.
MODEL_ERRORS_SQL = """
INSERT INTO kalshi_model_errors
SELECT c.ticker, s.model_version, c.outcome_known_ts, count(*), sum(abs(s.p_model - c.first_settlement_value::DOUBLE))
FROM kalshi_contracts AS c JOIN kalshi_edge_snapshots AS s USING (ticker)
WHERE c.ticker IN (SELECT unnest($tickers::VARCHAR[])) AND c.first_outcome <> 'void' AND s.p_model IS NOT NULL
  AND s.quote_date BETWEEN $lo AND $hi AND s.snapshot_seq BETWEEN $seq_lo AND $seq_hi
GROUP BY ALL
"""


def record_model_errors(conn: duckdb.DuckDBPyConnection, tickers: list[str]) -> int:
    """Errors of every model on these newly known contracts, reading only their snapshot days; returns rows."""
    days = snapshot_days(conn, tickers) if tickers else None
    if days is None:
        return 0
    params = {"tickers": tickers, "lo": days[0], "hi": days[1]}
    params |= seq_range(conn, TICKER_DAYS, params)
    return conn.execute(MODEL_ERRORS_SQL, params).fetchall()[0][0]


TICKER_DAYS = "quote_date BETWEEN $lo AND $hi AND ticker IN (SELECT unnest($tickers::VARCHAR[]))"  # the snapshots of tickers


@dataclass(frozen=True)
class ReadState:
    """One row of kalshi_settlement_reads (same column order)."""
    ticker: str
    reads: int
    stale_reads: int
    first_read_at: datetime
    last_read_at: datetime
    next_read_at: datetime
    last_status: str | None
    last_result: str | None
    last_value: Decimal | None
    flag: str | None = None
    flagged_at: datetime | None = None
    flag_reason: str | None = None


def give_up_after() -> timedelta:
    """How long after close a ticker may stay unresolved before it is flagged and no longer read."""
    return timedelta(hours=env_number("KALSHI_SHADOW_SETTLEMENT_GIVE_UP_HOURS", 48, minimum=0))


def retry_gap(stale_reads: int) -> timedelta:
    """Wait before the next read: none after a read that brought news, so a settling contract is followed every run;
    then doubling with each read that brought nothing, capped."""
    if stale_reads <= 0:
        return timedelta(0)
    return min(FIRST_RETRY * 2 ** min(stale_reads - 1, 20), MAX_RETRY)


def _flag(obs: Observation | None, stale_reads: int, close_ts: datetime, now: datetime,
          give_up: timedelta) -> tuple[str | None, str | None]:
    """(flag, reason) when the ticker is given up on, else (None, None)."""
    if obs is not None and obs.status in FINAL_STATUSES:
        return None, None
    if now < close_ts + give_up or stale_reads < GIVE_UP_MIN_READS:
        return None, None
    hours = (now - close_ts).total_seconds() / 3600
    if obs is None:
        return "unknown_to_exchange", f"not returned by the exchange in the last {stale_reads} reads, {hours:.1f} h after close"
    return "never_finalized", (f"still {obs.status} (result {obs.result or 'none'}) in the last {stale_reads} reads, "
                               f"{hours:.1f} h after close")


def next_state(prev: ReadState | None, ticker: str, obs: Observation | None, close_ts: datetime, now: datetime,
               give_up: timedelta) -> ReadState:
    """The read state after reading `ticker` at `now`; `obs` None means the exchange did not return it."""
    answer = (obs.status, obs.result, obs.settlement_value) if obs else (None, None, None)
    news = obs is not None and (prev is None or answer != (prev.last_status, prev.last_result, prev.last_value))
    stale = 0 if news else (prev.stale_reads if prev else 0) + 1
    flag, reason = _flag(obs, stale, close_ts, now, give_up)
    flagged_at = (prev.flagged_at if prev and prev.flag == flag else now) if flag else None
    return ReadState(ticker, (prev.reads if prev else 0) + 1, stale, prev.first_read_at if prev else now, now,
                     now + retry_gap(stale), *answer, flag, flagged_at, reason)


def track_reads(conn: duckdb.DuckDBPyConnection, asked: list[str], observations: list[Observation], now: datetime) -> list[ReadState]:
    """Record one read of each asked ticker (backoff and flags); returns the states this read newly flagged, each logged."""
    if not asked:
        return []
    seen = {o.ticker: o for o in observations}
    give_up = give_up_after()
    rows = conn.execute("""
        SELECT c.ticker, c.close_ts, r.* EXCLUDE (ticker)
        FROM kalshi_contracts AS c LEFT JOIN kalshi_settlement_reads AS r USING (ticker)
        WHERE list_contains($asked, c.ticker)
    """, {"asked": asked}).fetchall()
    states, flagged = [], []
    for ticker, close_ts, *prev in rows:
        old = ReadState(ticker, *prev) if prev[0] is not None else None
        new = next_state(old, ticker, seen.get(ticker), close_ts, now, give_up)
        states.append(new)
        if new.flag and (old is None or old.flag != new.flag):
            log.warning("%s: flagged %s after %d reads, no longer read: %s", ticker, new.flag, new.reads, new.flag_reason)
            flagged.append(new)
    with transaction(conn):
        conn.executemany("INSERT OR REPLACE INTO kalshi_settlement_reads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [astuple(s) for s in states])
    return flagged


def quote_dates_of(conn: duckdb.DuckDBPyConnection, tickers: list[str]) -> list[str]:
    """UTC days holding snapshots of these tickers: the score partitions to (re)compute. Reads only the days their
    terms allow (`snapshot_days`), never the whole snapshot table."""
    days = snapshot_days(conn, tickers) if tickers else None
    if days is None:
        return []
    rows = conn.execute("""
        SELECT DISTINCT quote_date FROM kalshi_edge_snapshot_quotes
        WHERE quote_date BETWEEN $lo AND $hi AND ticker IN (SELECT unnest($tickers::VARCHAR[]))
        ORDER BY 1
    """, {"tickers": tickers, "lo": days[0], "hi": days[1]}).fetchall()
    return [r[0].isoformat() for r in rows]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


