"""The simulated BTC index: GBM with mean-reverting stochastic log-volatility and Poisson jumps, one value per second.

Deterministic for a seed and origin; generated lazily forward in fixed blocks, so any second from the origin on can
be asked for and the path does not depend on the order seconds are asked in (the market maker reads a little ahead).
"""

from __future__ import annotations

import math
import threading

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600
BLOCK = 600  # seconds drawn at a time: fixed, so the draws (and the path) do not depend on who asks when


class IndexPath:
    def __init__(self, seed: int, origin: int, s0: float = 95_000.0, base_vol: float = 0.55) -> None:
        self.origin = int(origin)
        self._rng = np.random.default_rng(seed)
        self._values = np.array([s0], dtype=np.float64)
        self._vols = np.array([base_vol], dtype=np.float64)  # the true vol of the step into each second
        self._logvol = math.log(base_vol)
        self._mean_logvol = math.log(base_vol)
        self._lock = threading.Lock()

    def _extend(self, n: int) -> None:
        dt = 1.0 / SECONDS_PER_YEAR
        rng = self._rng
        # Log-vol is an OU process (half-life ~2 h, vol-of-vol ~ 1.2/sqrt(year-ish)); jumps ~ 1 per 6 h, sd 0.4%.
        kappa, xi = math.log(2) / 7200.0, 0.004
        z = rng.standard_normal(n)
        zv = rng.standard_normal(n)
        jumps = rng.random(n) < 1.0 / 21600.0
        jump_sizes = rng.normal(0.0, 0.004, n) * jumps
        out = np.empty(n)
        vols = np.empty(n)
        s = self._values[-1]
        lv = self._logvol
        for i in range(n):  # a path is sequential by nature; this runs once per simulated second
            lv += kappa * (self._mean_logvol - lv) + xi * zv[i]
            sigma = math.exp(lv)
            s *= math.exp(-0.5 * sigma * sigma * dt + sigma * math.sqrt(dt) * z[i] + jump_sizes[i])
            out[i] = s
            vols[i] = sigma
        self._logvol = lv
        self._values = np.concatenate([self._values, out])
        self._vols = np.concatenate([self._vols, vols])

    def value(self, second: int) -> float:
        """The index at whole second `second` (epoch seconds)."""
        i = int(second) - self.origin
        if i < 0:
            raise ValueError(f"second {second} is before the path's origin {self.origin}")
        with self._lock:
            while i >= len(self._values):
                self._extend(BLOCK)
            return float(self._values[i])

    def values(self, first: int, last: int) -> np.ndarray:
        """Values for seconds first..last inclusive."""
        self.value(last)
        return self._values[first - self.origin : last - self.origin + 1].copy()

    def at(self, t: float) -> float:
        return self.value(math.floor(t))

    def current_vol(self) -> float:
        """The vol at the end of the generated path (which runs ahead of the clock); see `vol_at`."""
        return math.exp(self._logvol)

    def vol_at(self, t: float) -> float:
        """The true annualised vol the path was drawn with into second floor(t), which no tick-based estimate sees."""
        self.at(t)
        return float(self._vols[math.floor(t) - self.origin])
