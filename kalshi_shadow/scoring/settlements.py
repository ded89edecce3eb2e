"""Outcomes taken from the exchange for each stored ticker, with a history of every observation.

The settlement columns of `kalshi_contracts` follow the newest observation that carries a result. A contract is
re-read until its status is final, so disputes and amendments land; a changed outcome returns the ticker so its
scores are recomputed. Network calls happen while no DuckDB connection is open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable

import duckdb

from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.kalshi.models import Market
from kalshi_shadow.warehouse.connection import transaction

log = logging.getLogger(__name__)
FINAL_STATUSES = ("finalized",)
RESULT_STATUSES = ("determined", "amended", "finalized", "settled")
BATCH = 100


@dataclass(frozen=True)
class Observation:
    ticker: str
    status: str
    result: str | None
    settlement_value: Decimal | None
    expiration_value: Decimal | None
    settlement_ts: datetime | None


def pending_tickers(conn: duckdb.DuckDBPyConnection, now: datetime, since_seconds: int | None = None) -> list[str]:
    """Closed contracts without a final outcome; with `since_seconds`, also every contract closed in that window."""
    rows = conn.execute("""
        SELECT ticker FROM kalshi_contracts
        WHERE close_ts <= $now
          AND (settlement_status IS NULL OR settlement_status NOT IN ('finalized')
               OR ($since IS NOT NULL AND close_ts >= $now - to_seconds($since)))
        ORDER BY close_ts, ticker
    """, {"now": now, "since": since_seconds}).fetchall()
    return [r[0] for r in rows]


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


def apply_observations(conn: duckdb.DuckDBPyConnection, observations: list[Observation], now: datetime) -> list[str]:
    """Record observations and update contracts; returns tickers whose outcome is new or changed."""
    if not observations:
        return []
    rows = []
    for o in observations:  # at most a few hundred per run: one per contract read from the exchange
        if o.result == "scalar" and o.settlement_value is None:
            log.error("%s: scalar result without settlement_value_dollars; outcome left unset", o.ticker)
        rows.append((o.ticker, now, o.status, o.result, o.settlement_value, o.expiration_value, o.settlement_ts,
                     settlement_value(o.result, o.settlement_value)))
    with transaction(conn):
        conn.execute("CREATE OR REPLACE TEMP TABLE _obs (ticker VARCHAR, observed_at TIMESTAMPTZ, status VARCHAR, result VARCHAR, "
                     "settlement_value DECIMAL(18, 4), expiration_value DECIMAL(18, 8), settlement_ts TIMESTAMPTZ, paid DECIMAL(18, 4))")
        conn.executemany("INSERT INTO _obs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("INSERT INTO kalshi_settlement_observations SELECT * EXCLUDE (paid) FROM _obs")
        changed = [r[0] for r in conn.execute("""
            SELECT o.ticker FROM _obs AS o JOIN kalshi_contracts AS c USING (ticker)
            WHERE o.result IN ('yes', 'no', 'scalar', 'void')
              AND NOT (o.result = 'scalar' AND o.paid IS NULL)
              AND (c.outcome IS DISTINCT FROM o.result OR c.settlement_value IS DISTINCT FROM o.paid)
        """).fetchall()]
        conn.execute("""
            UPDATE kalshi_contracts AS c SET
                outcome = CASE WHEN o.result IN ('yes', 'no', 'scalar', 'void') AND NOT (o.result = 'scalar' AND o.paid IS NULL)
                               THEN o.result ELSE c.outcome END,
                settlement_value = CASE WHEN o.result IN ('yes', 'no', 'scalar', 'void') AND NOT (o.result = 'scalar' AND o.paid IS NULL)
                                        THEN o.paid ELSE c.settlement_value END,
                expiration_value = coalesce(o.expiration_value, c.expiration_value),
                settled_ts = coalesce(o.settlement_ts, c.settled_ts),
                settlement_status = o.status,
                settlement_checked_at = o.observed_at,
                status = o.status
            FROM _obs AS o WHERE c.ticker = o.ticker
        """)
    return changed


def quote_dates_of(conn: duckdb.DuckDBPyConnection, tickers: list[str]) -> list[str]:
    """UTC days holding snapshots of these tickers: the score partitions to (re)compute."""
    if not tickers:
        return []
    rows = conn.execute("""
        SELECT DISTINCT s.quote_date FROM kalshi_edge_snapshots AS s
        JOIN kalshi_contracts AS c USING (ticker)
        WHERE list_contains($tickers, s.ticker) AND s.quote_date >= CAST(c.close_ts AT TIME ZONE 'UTC' AS DATE) - 3
        ORDER BY 1
    """, {"tickers": tickers}).fetchall()
    return [r[0].isoformat() for r in rows]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


