"""Fault switches for tests: REST error bursts and slow pages, dropped/malformed/silent WebSocket feeds, a spot venue
silent or trading off the index."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    http_5xx: int = 0
    http_429: int = 0
    drop_ws: int = 0
    drop_kalshi_ws: int = 0          # close every Kalshi WebSocket connection (N times, once a second)
    drop_delta: int = 0              # the next N orderbook deltas are numbered but never sent (a seq gap)
    malformed_ws: int = 0
    slow_pages: int = 0              # the next N REST answers are held back after they are built (a slow network)
    slow_page_seconds: float = 0.0
    venue_silence_until: dict[str, float] = field(default_factory=dict)  # venue -> monotonic time its feed speaks again
    venue_offset: dict[str, float] = field(default_factory=dict)         # venue -> relative error of its prices (0.01: 1% high)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, *, http_5xx: int = 0, http_429: int = 0, drop_ws: int = 0, drop_kalshi_ws: int = 0, drop_delta: int = 0,
            malformed_ws: int = 0, ws_silence_seconds: float = 0.0,
            slow_pages: int = 0, slow_page_seconds: float = 0.0, venue_silence: dict[str, float] | None = None,
            venue_offset: dict[str, float] | None = None) -> None:
        """Add faults. `ws_silence_seconds` silences the Coinbase feed (as `venue_silence={"coinbase": s}`);
        `venue_offset` sets a venue's price error (0 clears it)."""
        with self._lock:
            now = time.monotonic()
            for venue, seconds in (venue_silence or {}).items():
                self.venue_silence_until[venue] = now + float(seconds)
            for venue, frac in (venue_offset or {}).items():
                self.venue_offset[venue] = float(frac)
            self.slow_pages += slow_pages
            if slow_page_seconds:
                self.slow_page_seconds = slow_page_seconds
            self.http_5xx += http_5xx
            self.http_429 += http_429
            self.drop_ws += drop_ws
            self.drop_kalshi_ws += drop_kalshi_ws
            self.drop_delta += drop_delta
            self.malformed_ws += malformed_ws
            if ws_silence_seconds:
                self.venue_silence_until["coinbase"] = now + ws_silence_seconds

    def take(self, name: str) -> bool:
        """Consume one pending fault of `name`, if any."""
        with self._lock:
            n = getattr(self, name)
            if n > 0:
                setattr(self, name, n - 1)
                return True
            return False

    def silent(self, venue: str = "coinbase") -> bool:
        return time.monotonic() < self.venue_silence_until.get(venue, 0.0)

    def offset(self, venue: str) -> float:
        return self.venue_offset.get(venue, 0.0)
