"""The simulated spot venues: each trades at the index times a basis of its own that persists.

A real venue's price differs from the settlement index (BRTI, computed from several venues' books) by a basis that
lasts for minutes and now and then jumps. Here each venue's log-basis is an Ornstein-Uhlenbeck process in one-second
steps (half-life `HALF_LIFE` s, stationary sd `BASIS_SD`) with Poisson jumps that then decay like the rest, drawn
independently per venue. So no single venue is the index, and the median of three is closer to it than any one:
what the platform's index proxy has to find out. Settlement stays on the index itself (`exchange.py`).

Deterministic for a seed, venue and origin, and generated lazily in fixed blocks like the index path, so a value
does not depend on who asked first.
"""

from __future__ import annotations

import math
import threading
import zlib

import numpy as np
from scipy.signal import lfilter

VENUES = ("coinbase", "kraken", "bitstamp")
HALF_LIFE = 180.0      # seconds for a basis to halve
BASIS_SD = 1.5e-4      # stationary sd of the log-basis (1.5 bp: about $14 at $95k)
JUMP_RATE = 1 / 3600   # jumps per second (one an hour)
JUMP_SD = 4e-4         # sd of a jump (4 bp)
BLOCK = 600


class BasisPath:
    """One venue's log-basis to the index, per whole second from `origin`."""

    def __init__(self, seed: int, venue: str, origin: int) -> None:
        self.origin = int(origin)
        self._rng = np.random.default_rng([seed, zlib.crc32(venue.encode())])
        self._a = 0.5 ** (1.0 / HALF_LIFE)
        self._shock_sd = BASIS_SD * math.sqrt(1.0 - self._a**2)
        self._values = np.array([self._rng.normal(0.0, BASIS_SD)])
        self._lock = threading.Lock()

    def _extend(self) -> None:
        rng = self._rng
        shocks = rng.normal(0.0, self._shock_sd, BLOCK) + rng.normal(0.0, JUMP_SD, BLOCK) * (rng.random(BLOCK) < JUMP_RATE)
        x, _ = lfilter([1.0], [1.0, -self._a], shocks, zi=[self._a * self._values[-1]])
        self._values = np.concatenate([self._values, x])

    def value(self, second: int) -> float:
        i = int(second) - self.origin
        if i < 0:
            raise ValueError(f"second {second} is before the basis path's origin {self.origin}")
        with self._lock:
            while i >= len(self._values):
                self._extend()
            return float(self._values[i])


class Venues:
    """Every venue's basis over one index: `price(venue, t)` is what that venue trades at, `t` in epoch seconds."""

    def __init__(self, index, seed: int) -> None:
        self.index = index
        self.basis = {v: BasisPath(seed, v, index.origin) for v in VENUES}

    def price(self, venue: str, t: float) -> float:
        second = math.floor(t)
        return self.index.value(second) * math.exp(self.basis[venue].value(second))
