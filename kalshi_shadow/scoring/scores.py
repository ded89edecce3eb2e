"""Scores for snapshots of settled contracts, one UTC quote day at a time, in SQL.

Model and market are compared only on *paired* rows: the model priced the quote (fresh inputs, see `UNPRICEABLE`)
and the book had both sides, so a mid exists. A one-sided book (no bid or no ask, common away from the money) has
no mid: its row is scored for the model alone and marked `excluded_reason = 'one_sided_book'`, so it never enters a
model-vs-mid average (averaging each side over its own rows compares different populations and can flip the
verdict). `excluded_reason IS NULL` is the paired set.

Idempotent: a day's rows whose stored outcome no longer matches the contract (an amendment) are deleted and
re-scored; snapshots already scored are skipped, so a re-run adds only newly settled contracts. A full run
(backfill) recomputes the whole day.
"""

from __future__ import annotations

from datetime import date

import duckdb
from kalshi_shadow.warehouse.connection import transaction

EPS = 1e-6  # log loss clips p to [EPS, 1 - EPS]

SCORE_SQL = f"""
INSERT INTO kalshi_edge_snapshot_scores
WITH s AS (
    SELECT s.*, c.outcome, c.settlement_value::DOUBLE AS y
    FROM kalshi_edge_snapshots AS s JOIN kalshi_contracts AS c USING (ticker)
    WHERE s.quote_date = $day AND c.outcome IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM kalshi_edge_snapshot_scores AS x WHERE x.quote_date = $day AND x.snapshot_id = s.snapshot_id)
), clipped AS (
    SELECT *, CASE WHEN outcome <> 'void' THEN y END AS yy,
           least(greatest(p_model, {EPS}), 1 - {EPS}) AS pm, least(greatest(p_mid, {EPS}), 1 - {EPS}) AS pk
    FROM s
)
SELECT snapshot_id, quote_date, ticker, series_ticker, model_version, quote_ts, tau_seconds, outcome, yy AS y,
       p_model, p_mid,
       (p_model - yy) ^ 2                                   AS brier_model,
       -(yy * ln(pm) + (1 - yy) * ln(1 - pm))               AS logloss_model,
       (p_mid - yy) ^ 2                                     AS brier_mid,
       -(yy * ln(pk) + (1 - yy) * ln(1 - pk))               AS logloss_mid,
       yy - yes_ask::DOUBLE - fee_yes                       AS pnl_yes,
       (1 - yy) - no_ask::DOUBLE - fee_no                   AS pnl_no,
       ev_yes, ev_no, reasons,
       CASE WHEN outcome = 'void' THEN 'void' WHEN p_model IS NULL THEN 'model_unpriced'
            WHEN p_mid IS NULL THEN 'one_sided_book' END AS excluded_reason,
       now() AS scored_at
FROM clipped
"""

STALE_SQL = """
DELETE FROM kalshi_edge_snapshot_scores AS x USING kalshi_contracts AS c
WHERE x.ticker = c.ticker AND x.quote_date = $day
  AND (x.outcome IS DISTINCT FROM c.outcome
       OR x.y IS DISTINCT FROM CASE WHEN c.outcome <> 'void' THEN c.settlement_value::DOUBLE END)
"""


def score_day(conn: duckdb.DuckDBPyConnection, day: date, *, full: bool = False) -> dict[str, int]:
    with transaction(conn):
        if full:
            removed = conn.execute("DELETE FROM kalshi_edge_snapshot_scores WHERE quote_date = $day", {"day": day}).fetchall()[0][0]
        else:
            removed = conn.execute(STALE_SQL, {"day": day}).fetchall()[0][0]
        added = conn.execute(SCORE_SQL, {"day": day}).fetchall()[0][0]
    return {"rescored_or_removed": int(removed), "added": int(added)}
