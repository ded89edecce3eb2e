"""Client-side token bucket, so we stay under Kalshi's read budget instead of discovering it through 429s."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate_per_second: float, capacity: float | None = None) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be > 0")
        self.rate = rate_per_second
        self.capacity = capacity if capacity is not None else max(1.0, rate_per_second)
        self._tokens = self.capacity
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def _take(self, cost: float) -> float:
        """Take `cost` tokens if available (returns 0), else return the seconds until they will be."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._t) * self.rate)
            self._t = now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            return (cost - self._tokens) / self.rate

    def try_acquire(self, cost: float = 1.0) -> bool:
        """Take `cost` tokens without waiting; False when the bucket is short (a server answering 429)."""
        return self._take(cost) == 0.0

    def acquire(self, cost: float = 1.0) -> float:
        """Block until `cost` tokens are available; returns the seconds waited."""
        waited = 0.0
        while (need := self._take(cost)) > 0:
            time.sleep(need)
            waited += need
        return waited
