"""Which alerts are firing, when each was last sent, and how many repeats were held back since.

Kept in `<data_dir>/alerts_state.json`, not in a sensor cursor: `raise_alert`/`resolve_alert` are called from
code that is no sensor (a collector-liveness check, other processes), and the check and run-failure sensors share
it; a cursor belongs to one sensor. A lock file serialises read-modify-write across processes, and each write
goes to a temporary file that replaces the old one, so a crash leaves the previous state, never half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # An unreadable state only costs a repeated alert; keep the bad file to look at, start afresh.
        os.replace(path, path.with_suffix(".json.bad"))
        return {}
    return data.get("alerts", {}) if isinstance(data, dict) else {}


def _write(path: Path, alerts: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": 1, "alerts": alerts}, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def locked_state(path: Path) -> Iterator[dict]:
    """Yield {key: entry} under an exclusive lock; it is written back (atomically) when the block ends cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            alerts = _read(path)
            before = json.dumps(alerts, sort_keys=True)
            yield alerts
            if json.dumps(alerts, sort_keys=True) != before:
                _write(path, alerts)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(path: Path) -> dict:
    """A snapshot of the state (no lock held afterwards): for status displays and tests."""
    with locked_state(path) as alerts:
        return json.loads(json.dumps(alerts))
