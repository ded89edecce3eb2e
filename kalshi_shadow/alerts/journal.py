"""`<data_dir>/alerts.jsonl`: one JSON line per alert sent, reminded, recovered or not deliverable.

Fields every line has: ts, key, kind, severity, title, message, delivery {ok, attempts, error, targets}.
`kalshi-shadow status` reads the last line's `delivery`; keep these names.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path


def append(path: Path, record: dict) -> dict:
    line = {"ts": datetime.now(timezone.utc).isoformat(), **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # one write of one line: appends from several processes do not interleave
        fh.write(json.dumps(line, default=str) + "\n")
    return line


def read(path: Path) -> list[dict]:
    """Every JSON object line of a JSON-lines file (this journal, or up's run/restarts.jsonl); none if it is missing.
    A line that is not a JSON object (a half-written last line, junk) is skipped: readers run while writers append."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
