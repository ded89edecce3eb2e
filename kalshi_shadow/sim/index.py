"""The simulated BTC index: GBM with mean-reverting stochastic log-volatility and Poisson jumps, one value per second.

Deterministic for a seed and origin; generated lazily forward, so any second from the origin on can be asked for.
"""

from __future__ import annotations

import math
import threading

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600


class IndexPath:
    def __init__(self, seed: int, origin: int, s0: float = 95_000.0, base_vol: float = 0.55) -> None:
        self.origin = int(origin)
        self._rng = np.random.default_rng(seed)
        self._values = np.array([s0], dtype=np.float64)
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
        s = self._values[-1]
        lv = self._logvol
        for i in range(n):  # a path is sequential by nature; this runs once per simulated second
            lv += kappa * (self._mean_logvol - lv) + xi * zv[i]
            sigma = math.exp(lv)
            s *= math.exp(-0.5 * sigma * sigma * dt + sigma * math.sqrt(dt) * z[i] + jump_sizes[i])
            out[i] = s
        self._logvol = lv
        self._values = np.concatenate([self._values, out])

    def value(self, second: int) -> float:
        """The index at whole second `second` (epoch seconds)."""
        i = int(second) - self.origin
        if i < 0:
            raise ValueError(f"second {second} is before the path's origin {self.origin}")
        with self._lock:
            if i >= len(self._values):
                self._extend(max(i - len(self._values) + 1, 600))
            return float(self._values[i])

    def values(self, first: int, last: int) -> np.ndarray:
        """Values for seconds first..last inclusive."""
        self.value(last)
        return self._values[first - self.origin : last - self.origin + 1].copy()

    def at(self, t: float) -> float:
        return self.value(math.floor(t))

    def current_vol(self) -> float:
        return math.exp(self._logvol)
