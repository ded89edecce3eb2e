"""Point-in-time volatility: EWMA of one-minute log returns of BTC-USD spot, annualised, floored and capped.

Grid point g carries the last trade *received* at or before g, so a snapshot seen at time q may use the grid point
of q's minute. The recursion continues from the last stored state, so an incremental run and a recompute give the
same numbers.

**Gaps.** A minute in which no trade was received is not a zero return: the EWMA holds there (log_return NULL), and
the first return after the gap, which spans k minutes, counts as one observation of the per-minute variance r^2/k.
So a feed gap neither drags vol to the floor nor ends in a spike. Each point also records `gap_seconds`, the longest
silence of the feed in the minute it covers; a snapshot whose vol point exceeds the rules' bound gets `vol_gap`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GRID_SECONDS = 60
HALF_LIFE_MINUTES = 30.0
LAMBDA = 0.5 ** (1.0 / HALF_LIFE_MINUTES)
VOL_FLOOR = 0.20
VOL_CAP = 3.00
SEED_VOL = 0.50  # the variance the EWMA starts from on the first grid point ever
MINUTES_PER_YEAR = 365.25 * 24 * 60


@dataclass(frozen=True)
class VolState:
    last_price: float
    var_per_minute: float
    last_fresh_minute: int  # epoch minute of the last grid point whose minute had a trade (the EWMA's last update)


def initial_state(first_price: float, first_minute: int) -> VolState:
    return VolState(first_price, SEED_VOL**2 / MINUTES_PER_YEAR, first_minute)


def ewma(x: np.ndarray, lam: float, start: float, block: int = 256) -> np.ndarray:
    """y_t = lam * y_{t-1} + (1 - lam) * x_t from y_{-1} = start, vectorised block by block (closed form within a
    block; blocks keep lam^-k small enough to stay exact). Same numbers as scipy's lfilter, without importing
    scipy.signal (half a second in every run process)."""
    out = np.empty(len(x))
    k = np.arange(block)
    for lo in range(0, len(x), block):
        xb = x[lo:lo + block]
        n = len(xb)
        acc = np.cumsum(xb * lam ** -k[:n])
        out[lo:lo + n] = lam ** (k[:n] + 1) * start + (1.0 - lam) * lam ** k[:n] * acc
        start = out[lo + n - 1]
    return out


def ewma_vol(minutes: np.ndarray, prices: np.ndarray, fresh: np.ndarray,
             state: VolState) -> tuple[np.ndarray, np.ndarray, np.ndarray, VolState]:
    """(log returns, NaN where the minute had no trade; EWMA variance per minute; annualised vol clipped to
    [floor, cap]; new state) for grid points at epoch `minutes`, with `fresh` where a trade was received in the
    minute. Only fresh points update the EWMA; the others carry the last variance."""
    minutes = np.asarray(minutes, dtype=np.int64)
    prices, fresh = np.asarray(prices, dtype=float), np.asarray(fresh, dtype=bool)
    fi = np.flatnonzero(fresh)
    prev_price = np.concatenate([[state.last_price], prices[fi[:-1]]])
    prev_minute = np.concatenate([[state.last_fresh_minute], minutes[fi[:-1]]])
    r = np.log(prices[fi] / prev_price)
    var_fresh = ewma(r**2 / np.maximum(minutes[fi] - prev_minute, 1), LAMBDA, state.var_per_minute)
    # Each point takes the variance of the last fresh point at or before it (the stored state before the first).
    pos = np.searchsorted(fi, np.arange(len(prices)), side="right") - 1
    var = np.where(pos >= 0, var_fresh[np.maximum(pos, 0)] if len(fi) else np.nan, state.var_per_minute)
    rets = np.full(len(prices), np.nan)
    rets[fi] = r
    vol = np.clip(np.sqrt(var * MINUTES_PER_YEAR), VOL_FLOOR, VOL_CAP)
    if len(fi):
        state = VolState(float(prices[fi[-1]]), float(var_fresh[-1]), int(minutes[fi[-1]]))
    return rets, var, vol, state


def annualised(var_per_minute: float) -> float:
    return math.sqrt(var_per_minute * MINUTES_PER_YEAR)
