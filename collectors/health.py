"""A collector's health: counters rewritten atomically as JSON, notable events appended to raw `collector_events`.

The JSON record (`<data_dir>/health/<collector>.json`) is what `kalshi-shadow status` and the Dagster checks read:
it is replaced by rename, so a reader never sees half a record. Events are aggregated between writes: per kind, the
first few distinct details each get a row with their count and the rest one "(+N more)" row, so a storm of
malformed messages or gaps writes a handful of rows, not one per message.

A full disk never stops a collector: the raw writers keep their rows and retry (`kalshi_shadow/raw/store.py`), and
every failed attempt of a writer given to `watch()` (and of the events writer itself) is counted as a `write_failed`
event; the record's `write_failing` says which tables are holding how many rows. A record that cannot be written is
logged (throttled) and retried at the next write; `close()` logs the rows a still-failing disk kept from disk.
"""

from __future__ import annotations

import errno
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

DETAILS_PER_KIND = 5  # distinct details per kind kept as their own event row per write; the rest are lumped
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk, which passes: the collector waits it out
REPEAT_LOG_SECONDS = 60.0  # a health record that keeps failing to write is logged once per this long


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Health:
    """Counters of one collector process. `event()` is thread-safe; the rest is called from the collector's loop."""

    def __init__(self, data_dir: Path, collector: str, *, write_every: float = 2.0) -> None:
        self.path = Path(data_dir) / "health" / f"{collector}.json"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in NO_SPACE:  # e.g. `health` is a file: a fault no retry fixes, so a clear exit
                raise
            log.error("could not create %s: %s (retried at every write)", self.path.parent, exc)
        self.collector = collector
        self.write_every = write_every
        self.started_at = _now()
        self.messages = 0
        self.rows_acknowledged = 0
        self.files_written = 0
        self.errors: Counter[str] = Counter()  # every event kind, including reconnect/gap/silence
        self.counters: Counter[str] = Counter()  # plain tallies that are not events (heartbeats, cycles)
        self.reconnects = 0
        self.gaps = 0
        self.missed_messages = 0
        self.last_message_ts: datetime | None = None
        self.status = "starting"
        self.extra: dict[str, Any] = {}
        self._pending: dict[str, Counter[str]] = {}
        self._events = RawWriter(Path(data_dir) / "raw", "collector_events", flush_rows=1000, flush_seconds=5.0)
        self._last_write = 0.0
        self._lock = threading.Lock()
        self._watched: list[RawWriter] = []
        self._failures_counted: dict[int, int] = {id(self._events): 0}  # id(writer) -> write_failures already counted
        self._record_failing_since: float | None = None
        self._record_logged_at = 0.0

    def watch(self, *writers: RawWriter) -> None:
        """Count the failed writes of these raw writers as `write_failed` events and report what they hold."""
        for w in writers:
            self._watched.append(w)
            self._failures_counted[id(w)] = w.write_failures

    def _writers(self) -> list[RawWriter]:
        return [*self._watched, self._events]

    def _count_write_failures(self) -> None:
        for w in self._writers():
            n = w.write_failures - self._failures_counted.get(id(w), 0)
            if n > 0:
                self._failures_counted[id(w)] = w.write_failures
                self.event("write_failed", f"{w.table}: {w.last_write_error}", n)

    def write_failing(self) -> dict[str, dict[str, Any]]:
        """The tables whose writes are failing now: rows held in memory, since when, the last error."""
        return {w.table: {"rows_held": w.pending, "since": w.failing_since.isoformat() if w.failing_since else None,
                          "error": w.last_write_error} for w in self._writers() if w.failing}

    def event(self, kind: str, detail: str = "", n: int = 1) -> None:
        """Count a notable event (reconnect, gap, malformed, http_error, rate_limited, silence, ...)."""
        with self._lock:
            self.errors[kind] += n
            self._pending.setdefault(kind, Counter())[detail[:200]] += n
            if kind == "reconnect":
                self.reconnects += n

    def gap(self, stream: str, expected: int, got: int, note: str = "") -> None:
        """A sequence jump: `got - expected` messages were lost."""
        self.gaps += 1
        self.missed_messages += got - expected
        self.event("gap", f"{stream} expected {expected} got {got}{note}")

    def message(self) -> None:
        self.messages += 1
        self.last_message_ts = _now()

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
            "counters": dict(self.counters),
            "event_rows_acknowledged": self._events.rows_flushed,
            "write_failing": self.write_failing(),
            **self.extra,
        }

    def _event_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        now = _now()
        rows = []
        for kind, details in pending.items():
            ranked = details.most_common()
            for detail, n in ranked[:DETAILS_PER_KIND]:
                rows.append({"ts": now, "collector": self.collector, "kind": kind, "detail": detail, "count": n})
            rest = ranked[DETAILS_PER_KIND:]
            if rest:
                rows.append({"ts": now, "collector": self.collector, "kind": kind,
                             "detail": f"(+{len(rest)} more details, e.g. {rest[0][0][:120]})", "count": sum(n for _, n in rest)})
        return rows

    def maybe_write(self, force: bool = False) -> None:
        """Append pending events and rewrite the JSON record, at most every `write_every` s unless forced.

        Never raises for a failing disk: the events stay buffered in their writer and the record is tried again."""
        if not force and time.monotonic() - self._last_write < self.write_every:
            return
        self._last_write = time.monotonic()
        self._count_write_failures()
        self._events.extend(self._event_rows())
        self._events.flush() if force else self._events.maybe_flush()
        self._count_write_failures()  # the events writer's own failure: in this record, its row in the next batch
        self._write_record()

    def _write_record(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.snapshot(), indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            try:  # a half-written temporary file would only take space a full disk does not have
                tmp.unlink()
            except OSError:
                pass
            now = time.monotonic()
            if self._record_failing_since is None or now - self._record_logged_at >= REPEAT_LOG_SECONDS:
                log.error("could not write health record %s: %s", self.path, exc)
                self._record_logged_at = now
            if self._record_failing_since is None:
                self._record_failing_since = now
            self.event("write_failed", f"health record: {exc}")
        else:
            if self._record_failing_since is not None:
                log.warning("health record %s written again after %.0fs", self.path, time.monotonic() - self._record_failing_since)
                self._record_failing_since = None

    def close(self) -> None:
        """Final write on a clean exit; says how many rows a still-failing disk kept from being written."""
        self.status = "stopped"
        self.maybe_write(force=True)
        for w in self._writers():
            if w.failing and w.pending:
                log.error("%s: %d rows could not be written and are lost with this exit: %s",
                          w.table, w.pending, w.last_write_error)


def read_health(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every collector's last health record, by collector name (`spot`, `quotes`)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted((Path(data_dir) / "health").glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            out[p.stem] = {"error": f"unreadable health record: {exc}"}
    return out
