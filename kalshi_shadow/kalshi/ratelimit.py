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

    def acquire(self, cost: float = 1.0) -> float:
        """Block until `cost` tokens are available; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._t) * self.rate)
                self._t = now
                if self._tokens >= cost:
                    self._tokens -= cost
                    return waited
                need = (cost - self._tokens) / self.rate
            time.sleep(need)
            waited += need
