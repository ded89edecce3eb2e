"""Scores of snapshots of settled contracts: the view `kalshi_edge_snapshot_scores` (migration 008), a snapshot
joined to its contract's outcome. A score is derived, not stored: it is always current (an amended outcome rescores
every snapshot of the contract at once) and costs no disk.

Model and market are compared only on *paired* rows: the model priced the quote (fresh inputs, see `UNPRICEABLE`)
and the book had both sides, so a mid exists. A one-sided book (no bid or no ask, common away from the money) has
no mid: its row is scored for the model alone and marked `excluded_reason = 'one_sided_book'`, so it never enters a
model-vs-mid average (averaging each side over its own rows compares different populations and can flip the
verdict). `excluded_reason IS NULL` is the paired set.

The scores asset evaluates one UTC quote day: its figures and a range check, read from the view for that day.
"""

from __future__ import annotations

from datetime import date

import duckdb

from kalshi_shadow.pricing.snapshots import seq_range

EPS = 1e-6  # log loss clips p to [EPS, 1 - EPS] (in the view's SQL)

DAY_SQL = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE excluded_reason IS NULL) AS paired_rows,
       count(*) FILTER (WHERE brier_model NOT BETWEEN 0 AND 1 OR brier_mid NOT BETWEEN 0 AND 1 OR logloss_model < 0
                           OR abs(pnl_yes) > 1 OR abs(pnl_no) > 1) AS out_of_range,
       count(DISTINCT ticker) AS settled_contracts,
       avg(brier_model) FILTER (WHERE excluded_reason IS NULL) AS paired_brier_model,
       avg(brier_mid) FILTER (WHERE excluded_reason IS NULL) AS paired_brier_mid
FROM kalshi_edge_snapshot_scores WHERE quote_date = $day AND snapshot_seq BETWEEN $seq_lo AND $seq_hi
"""


def score_day(conn: duckdb.DuckDBPyConnection, day: date) -> dict[str, float | int | None]:
    """The day's scores in figures: rows, paired rows, rows out of range (must be 0), settled contracts, and the
    model's and the mid's Brier on the paired rows."""
    cur = conn.execute(DAY_SQL, {"day": day} | seq_range(conn, "quote_date = $day", {"day": day}))
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchall()[0]))
