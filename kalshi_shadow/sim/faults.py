"""Fault switches for tests: REST error bursts and slow pages, dropped/malformed/silent WebSocket feeds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    http_5xx: int = 0
    http_429: int = 0
    drop_ws: int = 0
    malformed_ws: int = 0
    silence_until: float = 0.0
    slow_pages: int = 0              # the next N REST answers are held back after they are built (a slow network)
    slow_page_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, *, http_5xx: int = 0, http_429: int = 0, drop_ws: int = 0, malformed_ws: int = 0, ws_silence_seconds: float = 0.0,
            slow_pages: int = 0, slow_page_seconds: float = 0.0) -> None:
        with self._lock:
            self.slow_pages += slow_pages
            if slow_page_seconds:
                self.slow_page_seconds = slow_page_seconds
            self.http_5xx += http_5xx
            self.http_429 += http_429
            self.drop_ws += drop_ws
            self.malformed_ws += malformed_ws
            if ws_silence_seconds:
                self.silence_until = time.monotonic() + ws_silence_seconds

    def take(self, name: str) -> bool:
        """Consume one pending fault of `name`, if any."""
        with self._lock:
            n = getattr(self, name)
            if n > 0:
                setattr(self, name, n - 1)
                return True
            return False

    def silent(self) -> bool:
        return time.monotonic() < self.silence_until
