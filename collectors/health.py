"""A collector's health: counters rewritten atomically as JSON, notable events appended to raw `collector_events`.

Events are aggregated per (kind, detail prefix) between flushes so a storm of malformed messages writes one row
with a count, not a row per message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kalshi_shadow.raw import RawWriter

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Health:
    def __init__(self, data_dir: Path, collector: str, *, write_every: float = 2.0) -> None:
        self.path = Path(data_dir) / "health" / f"{collector}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.collector = collector
        self.write_every = write_every
        self.started_at = _now()
        self.messages = 0
        self.rows_acknowledged = 0
        self.files_written = 0
        self.errors: Counter[str] = Counter()
        self.reconnects = 0
        self.gaps = 0
        self.missed_messages = 0
        self.last_message_ts: datetime | None = None
        self.status = "starting"
        self.extra: dict[str, Any] = {}
        self._pending: Counter[tuple[str, str]] = Counter()
        self._events = RawWriter(Path(data_dir) / "raw", "collector_events", flush_rows=1000, flush_seconds=5.0)
        self._last_write = 0.0
        self._lock = threading.Lock()

    def event(self, kind: str, detail: str = "") -> None:
        """Count a notable event (reconnect, gap, malformed, http_error, rate_limited, silence, ...)."""
        with self._lock:
            self.errors[kind] += 1
            self._pending[(kind, detail[:200])] += 1
        if kind in ("reconnect",):
            self.reconnects += 1

    def message(self) -> None:
        self.messages += 1
        self.last_message_ts = _now()

    def acknowledged(self, rows: int, files: int = 1) -> None:
        """Rows now durable on disk (their batch file was renamed into place)."""
        self.rows_acknowledged += rows
        self.files_written += files

    def snapshot(self) -> dict[str, Any]:
        return {
            "collector": self.collector,
            "pid": os.getpid(),
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "updated_at": _now().isoformat(),
            "last_message_ts": self.last_message_ts.isoformat() if self.last_message_ts else None,
            "messages": self.messages,
            "rows_acknowledged": self.rows_acknowledged,
            "files_written": self.files_written,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "missed_messages": self.missed_messages,
            "errors": dict(self.errors),
            **self.extra,
        }

    def maybe_write(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_write < self.write_every:
            return
        self._last_write = time.monotonic()
        with self._lock:
            pending, self._pending = self._pending, Counter()
        now = _now()
        for (kind, detail), n in pending.items():
            self._events.append({"ts": now, "collector": self.collector, "kind": kind, "detail": detail, "count": n})
        self._events.maybe_flush() if not force else self._events.flush()
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, self.path)


def read_health(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every collector's last health record, by collector name."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted((Path(data_dir) / "health").glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            out[p.stem] = {"error": f"unreadable health record: {exc}"}
    return out
