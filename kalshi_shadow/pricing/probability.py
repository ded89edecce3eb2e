"""P(YES) for Kalshi's BTC strike types under a lognormal law, vectorised over quotes.

The BTC series settle on the mean A of the 60 one-second index values in (close - 60 s, close], rounded to the
cent. Two laws live here; the models that use them are registered in `kalshi_shadow/models` (`lognormal.py`; the
market-anchored and recalibrated models build on the champion's law):

- `avg60-v1` (champion): A's log is normal with the variance of an arithmetic average of GBM over the window,
  sigma^2 * ((tau - 60) + 60/3) when the window is still ahead; inside the window the elapsed part is realised
  (`window_mean`, the mean of spot seen so far in the window, point in time) and only the rest is random.
- `spot-v1` (challenger): plain lognormal of spot at close, variance sigma^2 * tau.

Zero drift: over minutes to hours the drift is noise next to the volatility. Because A is rounded to the cent,
`greater` means A >= floor + 0.005, `between` means floor - 0.005 <= A < cap + 0.005, and so on, so the
buckets and tails of a ladder tile the line and their probabilities sum to 1.
"""

from __future__ import annotations

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600
WINDOW = 60.0
HALF_CENT = 0.005
CHAMPION = "avg60-v1"
CHALLENGER = "spot-v1"


def _p_above(threshold: np.ndarray, spot: np.ndarray, vol: np.ndarray, tau: np.ndarray, model: str,
             window_mean: np.ndarray) -> np.ndarray:
    """P(A >= threshold) (equivalently >, the law being continuous)."""
    if model == CHALLENGER:
        var = vol**2 * np.maximum(tau, 0.0) / SECONDS_PER_YEAR
        k, level = threshold, spot
    elif model == CHAMPION:
        inside = tau < WINDOW
        ahead_var = vol**2 * (np.maximum(tau - WINDOW, 0.0) + WINDOW / 3.0) / SECONDS_PER_YEAR
        frac = np.clip(tau / WINDOW, 0.0, 1.0)  # the share of the window still to come
        inside_var = vol**2 * (np.maximum(tau, 0.0) / 3.0) / SECONDS_PER_YEAR
        realised = np.where(np.isnan(window_mean), spot, window_mean)
        # Inside the window: A = (1 - f) * realised + f * F, F ~ lognormal(spot, sigma^2 tau / 3).
        k = np.where(inside, (threshold - (1.0 - frac) * realised) / np.where(frac > 0, frac, 1.0), threshold)
        var = np.where(inside, inside_var, ahead_var)
        level = spot
        k = np.where(inside & (frac <= 0), np.where(realised >= threshold, -np.inf, np.inf), k)
    else:
        raise ValueError(f"unknown model_version {model!r}")
    from scipy.special import ndtr  # imported here: the Dagster processes that never price skip its import

    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (np.log(level / k) - 0.5 * var) / sd
    # k <= 0 (the realised part alone clears the strike) -> certain; zero variance -> a step.
    d = np.where(k <= 0, np.inf, d)
    d = np.where((sd == 0) & (k > 0), np.where(level >= k, np.inf, -np.inf), d)
    return ndtr(d)


def prob_yes(strike_type: np.ndarray, floor: np.ndarray, cap: np.ndarray, spot: np.ndarray, vol: np.ndarray,
             tau: np.ndarray, *, model: str, window_mean: np.ndarray | None = None) -> np.ndarray:
    """P(YES) per row; NaN where the strike the type needs is missing or an input is missing."""
    st = np.asarray(strike_type, dtype=object)
    floor, cap, spot, vol, tau = (np.asarray(x, dtype=float) for x in (floor, cap, spot, vol, tau))
    wm = np.full(spot.shape, np.nan) if window_mean is None else np.asarray(window_mean, dtype=float)

    # Each strike type is priced on its own rows only: one tail (two for `between`) per row, not one per type.
    thresholds = {"greater": (floor + HALF_CENT, None), "greater_or_equal": (floor - HALF_CENT, None),
                  "less": (None, cap - HALF_CENT), "less_or_equal": (None, cap + HALF_CENT),
                  "between": (floor - HALF_CENT, cap + HALF_CENT)}
    p = np.full(spot.shape, np.nan)
    with np.errstate(invalid="ignore"):
        for kind, (lower, upper) in thresholds.items():
            m = st == kind
            if not m.any():
                continue
            above = lambda th: _p_above(th[m], spot[m], vol[m], tau[m], model, wm[m])  # noqa: E731
            p[m] = (above(lower) if lower is not None else 1.0) - (above(upper) if upper is not None else 0.0)
    bad = np.isnan(spot) | np.isnan(vol) | np.isnan(tau) | (spot <= 0)
    return np.where(bad, np.nan, np.clip(p, 0.0, 1.0))
