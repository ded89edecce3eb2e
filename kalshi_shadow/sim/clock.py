"""Clocks: wall time for live runs, a manual clock that tests advance deterministically."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class WallClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """Time stands still until `advance` is called."""

    def __init__(self, start: datetime | float) -> None:
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += seconds
            return self._t


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def iso(ts: float) -> str:
    """Kalshi-style ISO-8601 UTC with a `Z`."""
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


Clock = WallClock | ManualClock
