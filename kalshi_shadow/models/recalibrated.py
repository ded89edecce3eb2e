"""`avg60-recal-v1`: the champion, recalibrated walk-forward on outcomes known before each quote was seen.

Platt scaling per series: P = sigmoid(a + b * logit(p_champion)), with (a, b) fitted by logistic regression. A
recalibration that sees the future looks skilful and is worthless (a published study of Kalshi crypto contracts
found exactly that), so every fit is point in time:

- fits happen at refit boundaries H, every `refit_interval()` (hourly; 5 minutes on the simulator's fast clock);
  pricing splits its chunks there, so the rows before H are stored when the fit at H is made;
- the fit at H uses the champion's priced snapshots of settled contracts whose outcome was *known* (read from the
  exchange) before H, seen within `window_days()` before H;
- a quote seen at t uses the fit of the latest boundary at or before t; before a series has a fit (fewer than
  `MIN_EVENTS` events or one outcome only), it is not priced (NaN).

A fit is stored once in `kalshi_model_fits` and never recomputed, like the index grid: a backfill reads the fit the
live run made, so it reproduces the live rows, and outcomes that become known later change no earlier probability.

**Training bins.** Re-reading 14 days of snapshots for every fit made an hourly tick cost more with every day of
history. Instead, the first fit after a contract's outcome was recorded bins that contract's priced snapshots once
(`kalshi_model_training_bins`: per refit-interval bucket of seen time and logit bin, with the outcome as first read),
the way the haircut's evidence (`kalshi_model_errors`) is kept; a fit sums the bins of its window. The rows are those
stored when the contract was binned, which is after every quote seen before its outcome was recorded has been priced
(pricing splits at boundaries). A window that is not a whole number of refit intervals cannot be cut from buckets, so
such a fit reads the snapshots (`TRAIN_SQL`), as every fit did before; a test holds the two to the same numbers.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import duckdb
import numpy as np

from kalshi_shadow.config import env_number
from kalshi_shadow.models.base import Model, ModelInputs
from kalshi_shadow.models.lognormal import Avg60
from kalshi_shadow.pricing.probability import CHAMPION

MIN_EVENTS = 10           # settled events a fit needs (and both outcomes)
LOGIT_BIN = 0.05          # training rows are binned on logit(p) this finely
EPS = 1e-6
X_SQL = f"round(ln({{p}} / (1 - {{p}})) / {LOGIT_BIN}) * {LOGIT_BIN}"  # a training row's logit bin
BUCKET_KEY = "{model}.training_bucket_seconds"  # asset_watermarks: the refit interval the bins were cut at


def refit_interval() -> int:
    """Seconds between refits (`KALSHI_SHADOW_RECAL_REFIT_MINUTES`: 60, or 5 with the simulator's fast clock)."""
    import os

    default = 5 if os.environ.get("KALSHI_SHADOW_FAST_CLOCK") else 60
    return int(env_number("KALSHI_SHADOW_RECAL_REFIT_MINUTES", default, minimum=1, integer=True)) * 60


def window_days() -> float:
    """How far back a fit looks (`KALSHI_SHADOW_RECAL_WINDOW_DAYS`, 14): recent enough to follow the market."""
    return env_number("KALSHI_SHADOW_RECAL_WINDOW_DAYS", 14, minimum=0.01)


# Training rows for one series and boundary, binned on logit(p): the champion's priced snapshots of contracts settled
# yes/no (as first read) whose outcome was known before the boundary, seen within the window before it. Read from the
# snapshots: the reference, and the path for a window the bins cannot cut.
TRAIN_SQL = f"""
WITH t AS (
    SELECT greatest(least(s.p_model, 1 - {EPS}), {EPS}) AS p, (c.first_outcome = 'yes')::INTEGER AS y, c.event_ticker
    FROM kalshi_edge_snapshots AS s JOIN kalshi_contracts AS c USING (ticker)
    WHERE s.model_version = $champion AND s.series_ticker = $series AND s.p_model IS NOT NULL
      AND s.seen_ts < $boundary AND s.seen_ts >= $boundary - to_seconds($window)
      AND s.quote_date >= ($boundary - to_seconds($window))::DATE  -- prunes by zone maps
      AND c.first_outcome IN ('yes', 'no') AND c.outcome_known_ts < $boundary
)
SELECT {X_SQL.format(p="p")} AS x, count(*) AS n, sum(y) AS k,
       (SELECT count(DISTINCT event_ticker) FROM t) AS events
FROM t GROUP BY 1 ORDER BY 1  -- a fixed order: the same sums, to the last bit, on every run
"""

# The same from the bins: a few thousand rows for 14 days of a series.
BINS_TRAIN_SQL = """
WITH t AS (
    SELECT x, n, y, event_ticker FROM kalshi_model_training_bins
    WHERE model_version = $model AND series_ticker = $series AND known_ts < $boundary
      AND seen_bucket < $boundary AND seen_bucket >= $boundary - to_seconds($window)
)
SELECT x, sum(n) AS n, coalesce(sum(n) FILTER (WHERE y), 0) AS k, (SELECT count(DISTINCT event_ticker) FROM t) AS events
FROM t GROUP BY 1 ORDER BY 1
"""

# Contracts to bin for a fit at the boundary: settled yes/no (as first read) before it, not binned yet, and seen
# recently enough to have snapshots in its window (a priced snapshot needs terms fetched by then, at most
# TERMS_LOOKBACK old). Their priced snapshots all lie at or after the first terms fetched (`first_seen_ts`).
TO_BIN_SQL = """
SELECT c.ticker, c.first_seen_ts FROM kalshi_contracts AS c
WHERE c.first_outcome IN ('yes', 'no') AND c.outcome_known_ts < $boundary
  AND coalesce(c.last_seen_ts, c.outcome_known_ts) >= $boundary - to_seconds($window) - to_seconds($terms)
  AND NOT EXISTS (SELECT 1 FROM kalshi_model_training_contracts AS t WHERE t.model_version = $model AND t.ticker = c.ticker)
"""

BIN_SQL = f"""
CREATE OR REPLACE TEMP TABLE _bins AS
WITH c AS (
    SELECT ticker, event_ticker, outcome_known_ts AS known_ts, first_outcome = 'yes' AS y FROM kalshi_contracts
    WHERE ticker IN (SELECT unnest($tickers::VARCHAR[]))
), q AS (
    SELECT snapshot_seq, ticker, series_ticker, seen_ts FROM kalshi_edge_snapshot_quotes
    WHERE seen_ts >= $lo AND ticker IN (SELECT unnest($tickers::VARCHAR[]))
), p AS (
    SELECT snapshot_seq, greatest(least(p_model, 1 - {EPS}), {EPS}) AS p FROM kalshi_edge_snapshot_models
    WHERE model_version = $champion AND p_model IS NOT NULL AND snapshot_seq BETWEEN $seq_lo AND $seq_hi
)
SELECT q.ticker, q.series_ticker, c.event_ticker, c.known_ts, c.y,
       to_timestamp(floor(epoch(q.seen_ts) / $step) * $step) AS seen_bucket, {X_SQL.format(p="p.p")} AS x, count(*) AS n
FROM q JOIN p USING (snapshot_seq) JOIN c USING (ticker)
GROUP BY ALL
"""


def fit_platt(x: np.ndarray, n: np.ndarray, k: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Weighted logistic regression of k successes in n trials on x: (a, b) by Newton's method, slightly ridged so a
    separable set still gives finite numbers."""
    from scipy.special import expit  # here: the Dagster processes that never price skip the import

    a, b = 0.0, 1.0
    for _ in range(iterations):
        p = expit(a + b * x)
        w = n * p * (1 - p)
        g = np.array([np.sum(k - n * p), np.sum((k - n * p) * x)]) - 1e-6 * np.array([a, b - 1.0])
        h = np.array([[np.sum(w), np.sum(w * x)], [np.sum(w * x), np.sum(w * x * x)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a + step[0], b + step[1]
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(a), float(b)


class Recalibrated(Model):
    name = "avg60-recal-v1"
    description = "The champion through a per-series Platt fit, refitted on a schedule on outcomes known before the quote was seen."

    def __init__(self) -> None:
        self._a = self._b = None  # per row of the chunk `prepare` was given; `prob_yes` prices that chunk

    @property
    def refit_seconds(self) -> int:  # type: ignore[override]
        return refit_interval()

    def _fit(self, conn: duckdb.DuckDBPyConnection, series: str, boundary: float) -> tuple[float | None, float | None]:
        """Fit (series, boundary) on what was known before it, store it, return (a, b) or (None, None)."""
        at = datetime.fromtimestamp(boundary, tz=timezone.utc)
        window = window_days() * 86400
        if self._binned():
            rows = conn.execute(BINS_TRAIN_SQL, {"model": self.name, "series": series, "boundary": at, "window": window}).fetchnumpy()
        else:
            rows = conn.execute(TRAIN_SQL, {"champion": CHAMPION, "series": series, "boundary": at, "window": window}).fetchnumpy()
        x, n, k = (np.asarray(rows[c], dtype=float) for c in ("x", "n", "k"))
        events = int(rows["events"][0]) if len(x) else 0
        ok = events >= MIN_EVENTS and 0 < k.sum() < n.sum()
        a, b = fit_platt(x, n, k) if ok else (None, None)
        conn.execute("""INSERT INTO kalshi_model_fits VALUES ($m, $s, $at, $a, $b, $n, $e, now()) ON CONFLICT DO NOTHING""",
                     {"m": self.name, "s": series, "at": at, "a": a, "b": b, "n": int(n.sum()), "e": int(events)})
        return a, b

    def _binned(self) -> bool:
        """Fits sum the training bins when the window is a whole number of refit intervals (buckets can cut it)."""
        return (window_days() * 86400) % self.refit_seconds == 0

    def bin_settled(self, conn: duckdb.DuckDBPyConnection, boundary: datetime) -> int:
        """Bin the priced snapshots of the contracts settled before `boundary` that no fit has binned yet; returns
        the contracts added. Bins cut at another refit interval are dropped first and rebuilt as fits need them."""
        from kalshi_shadow.pricing.snapshots import TERMS_LOOKBACK, seq_range  # here: pricing imports the models

        step, window = self.refit_seconds, window_days() * 86400
        key = BUCKET_KEY.format(model=self.name)
        cut = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [key]).fetchall()
        if not cut or cut[0][0] != step:
            conn.execute("DELETE FROM kalshi_model_training_bins WHERE model_version = ?", [self.name])
            conn.execute("DELETE FROM kalshi_model_training_contracts WHERE model_version = ?", [self.name])
            conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value", [key, step])
        new = conn.execute(TO_BIN_SQL, {"boundary": boundary, "window": window, "terms": TERMS_LOOKBACK.total_seconds(),
                                        "model": self.name}).fetchall()
        if not new:
            return 0
        tickers = [t for t, _ in new]
        seen = [f for _, f in new if f is not None]
        conn.execute("CREATE OR REPLACE TEMP TABLE _bins (ticker VARCHAR, n BIGINT)")
        if seen:  # constant bounds, so the scans prune by zone maps
            lo = min(seen)
            params = {"lo": lo, "tickers": tickers}
            params |= seq_range(conn, "seen_ts >= $lo AND ticker IN (SELECT unnest($tickers::VARCHAR[]))", params)
            if params["seq_hi"] >= params["seq_lo"]:
                conn.execute(BIN_SQL, {**params, "champion": CHAMPION, "step": step})
                conn.execute("""INSERT INTO kalshi_model_training_bins
                                SELECT $model, series_ticker, event_ticker, known_ts, y, seen_bucket, x, sum(n) FROM _bins
                                GROUP BY ALL ORDER BY known_ts, seen_bucket, x  -- in known order: fits prune by zone maps""",
                             {"model": self.name})
        conn.execute("""INSERT INTO kalshi_model_training_contracts
                        SELECT $model, c.ticker, c.outcome_known_ts, coalesce(b.n, 0), now() FROM kalshi_contracts AS c
                        LEFT JOIN (SELECT ticker, sum(n) AS n FROM _bins GROUP BY 1) AS b USING (ticker)
                        WHERE c.ticker IN (SELECT unnest($tickers::VARCHAR[]))""", {"model": self.name, "tickers": tickers})
        conn.execute("DROP TABLE _bins")
        return len(tickers)

    def prepare(self, conn: duckdb.DuckDBPyConnection, x: ModelInputs) -> None:
        step = self.refit_seconds
        boundary = np.floor(x.seen_ts / step) * step
        self._a, self._b = np.full(len(x), np.nan), np.full(len(x), np.nan)
        keys = {(s, float(h)) for s, h in zip(x.series, boundary) if s is not None and not math.isnan(h)}
        stored = {}
        if keys:
            stored = {(s, h.timestamp()): (a, b) for s, h, a, b in conn.execute(
                "SELECT series_ticker, refit_ts, a, b FROM kalshi_model_fits WHERE model_version = ? AND refit_ts >= to_timestamp(?) AND refit_ts <= to_timestamp(?)",
                [self.name, min(h for _, h in keys), max(h for _, h in keys)]).fetchall()}
        missing = sorted(k for k in keys if k not in stored)
        if missing and self._binned():
            self.bin_settled(conn, datetime.fromtimestamp(max(h for _, h in missing), tz=timezone.utc))
        for key in sorted(keys):
            a, b = stored[key] if key in stored else self._fit(conn, *key)
            if a is not None:
                m = (x.series == key[0]) & (boundary == key[1])
                self._a[m], self._b[m] = a, b

    def prob_yes(self, x: ModelInputs) -> np.ndarray:
        from scipy.special import expit, logit

        p = np.clip(Avg60().prob_yes(x), EPS, 1 - EPS)
        return expit(self._a + self._b * logit(p))
