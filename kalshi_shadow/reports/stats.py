"""The report's statistics, in numpy, on event-level sums fetched from DuckDB (never a loop over snapshots).

Rows of one event are not independent (its contracts settle on one spot path, its snapshots repeat through the
hour), so every interval here resamples or clusters whole events: a bootstrap draws events with replacement, and
the standard error of a mean is the cluster-robust (sandwich) one, with the G / (G - 1) small-sample factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

B = 1000        # bootstrap draws
ALPHA = 0.05    # 95% intervals
Z = 1.959963984540054


def event_weights(n_events: int, *, draws: int = B, seed: int = 7) -> np.ndarray:
    """(draws, n_events) counts: how often each event is drawn in each resample of n_events events."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_events, np.full(n_events, 1.0 / n_events), size=draws).astype(float)


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float
    hi: float


def skill_score(sum_model: np.ndarray, sum_ref: np.ndarray, *, draws: int = B, seed: int = 7) -> Interval:
    """Skill 1 - S_model / S_ref from per-event sums of the scores (same rows in both), with a percentile
    interval from resampling events. NaN when there is no event or the reference scores zero."""
    sum_model, sum_ref = np.asarray(sum_model, float), np.asarray(sum_ref, float)
    if sum_model.size == 0 or sum_ref.sum() <= 0:
        return Interval(np.nan, np.nan, np.nan)
    est = 1 - sum_model.sum() / sum_ref.sum()
    w = event_weights(sum_model.size, draws=draws, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = 1 - (w @ sum_model) / (w @ sum_ref)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2]) if boot.size else (np.nan, np.nan)
    return Interval(float(est), float(lo), float(hi))


def clustered_mean(sums: np.ndarray, counts: np.ndarray) -> Interval:
    """Mean of rows grouped in clusters (given each cluster's sum and row count), with a 95% normal interval
    from the cluster-robust standard error: sqrt(G/(G-1) * sum_g (S_g - n_g * mean)^2) / N."""
    sums, counts = np.asarray(sums, float), np.asarray(counts, float)
    n, g = counts.sum(), counts.size
    if n == 0:
        return Interval(np.nan, np.nan, np.nan)
    mean = sums.sum() / n
    if g < 2:
        return Interval(float(mean), np.nan, np.nan)
    se = np.sqrt(g / (g - 1) * np.sum((sums - counts * mean) ** 2)) / n
    return Interval(float(mean), float(mean - Z * se), float(mean + Z * se))


def naive_mean(values: np.ndarray) -> Interval:
    """Mean with the textbook interval that treats every row as independent (for comparison only)."""
    v = np.asarray(values, float)
    if v.size < 2:
        return Interval(float(v.mean()) if v.size else np.nan, np.nan, np.nan)
    se = v.std(ddof=1) / np.sqrt(v.size)
    return Interval(float(v.mean()), float(v.mean() - Z * se), float(v.mean() + Z * se))


@dataclass(frozen=True)
class Reliability:
    """Per probability bin: rows, mean forecast, observed frequency and its 95% band from resampling events."""
    bins: np.ndarray          # bin index
    n: np.ndarray
    mean_p: np.ndarray
    observed: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def reliability(events: np.ndarray, bins: np.ndarray, n: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray,
                n_bins: int = 10, *, draws: int = B, seed: int = 7) -> Reliability:
    """From rows of (event, bin, n, sum p, sum y), one per event and bin present."""
    ev_codes, ev_idx = np.unique(events, return_inverse=True)
    e = ev_codes.size
    grid_n, grid_y, grid_p = (np.zeros((e, n_bins)) for _ in range(3))
    np.add.at(grid_n, (ev_idx, bins), n)
    np.add.at(grid_y, (ev_idx, bins), sum_y)
    np.add.at(grid_p, (ev_idx, bins), sum_p)
    tot_n, tot_y, tot_p = grid_n.sum(0), grid_y.sum(0), grid_p.sum(0)
    keep = np.flatnonzero(tot_n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if e:
            w = event_weights(e, draws=draws, seed=seed)
            boot = (w @ grid_y[:, keep]) / (w @ grid_n[:, keep])
            lo, hi = np.nanquantile(boot, ALPHA / 2, axis=0), np.nanquantile(boot, 1 - ALPHA / 2, axis=0)
        else:
            lo = hi = np.empty(0)
        return Reliability(keep, tot_n[keep], tot_p[keep] / tot_n[keep], tot_y[keep] / tot_n[keep], lo, hi)


@dataclass(frozen=True)
class Decomposition:
    """Murphy's decomposition on forecast bins: Brier ~ reliability - resolution + uncertainty. `residual` is the
    Brier score minus that sum (spread of forecasts within bins); zero when every forecast sits on its bin's mean."""
    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    residual: float


def decompose(brier: float, n: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray) -> Decomposition:
    """From per-bin row counts, forecast sums and outcome sums, and the rows' Brier score."""
    n, sum_p, sum_y = (np.asarray(a, float) for a in (n, sum_p, sum_y))
    total = n.sum()
    if total == 0:
        return Decomposition(*(np.nan,) * 5)
    keep = n > 0
    n, pbar, obar = n[keep], sum_p[keep] / n[keep], sum_y[keep] / n[keep]
    base = sum_y.sum() / total
    rel = float(np.sum(n * (pbar - obar) ** 2) / total)
    res = float(np.sum(n * (obar - base) ** 2) / total)
    unc = float(base * (1 - base))
    return Decomposition(float(brier), rel, res, unc, float(brier - (rel - res + unc)))


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Equity minus its running maximum (<= 0)."""
    equity = np.asarray(equity, float)
    return equity - np.maximum.accumulate(equity) if equity.size else equity
