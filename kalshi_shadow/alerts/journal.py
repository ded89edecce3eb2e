"""`<data_dir>/alerts.jsonl`: one JSON line per alert sent, reminded, recovered or not deliverable.

Fields every line has: ts, key, kind, severity, title, message, delivery {ok, attempts, error, targets}.
`kalshi-shadow status` reads the last line's `delivery`; keep these names.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path


def append(path: Path, record: dict) -> dict:
    line = {"ts": datetime.now(timezone.utc).isoformat(), **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # one write of one line: appends from several processes do not interleave
        fh.write(json.dumps(line, default=str) + "\n")
    return line


def read(path: Path, since: datetime | None = None) -> list[dict]:
    """Every JSON object line of a JSON-lines file (this journal, or up's run/restarts.jsonl); none if it is missing.
    A line that is not a JSON object (a half-written last line, junk) is skipped: readers run while writers append.

    With `since`, only the lines of records at or after it, read backwards from the end of the file in blocks: the
    files only grow, so a reader of the last day costs the same after a year as after a week."""
    try:
        if since is None:
            text = path.read_text(errors="replace")
        else:
            text = _tail_since(path, since)
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and (since is None or _at_or_after(rec, since)):
            out.append(rec)
    return out


def read_last(path: Path, span: timedelta) -> list[dict]:
    """The records within `span` of the newest one (the newest included): a bounded read for `kalshi-shadow status`.
    A problem still firing is reminded every KALSHI_SHADOW_ALERT_REPEAT_MINUTES, so a span well above that sees
    every key that is firing, however old the journal."""
    try:
        last_block = _tail_since(path, datetime.max.replace(tzinfo=timezone.utc))  # reads the last block only
    except FileNotFoundError:
        return []
    for line in reversed(last_block.splitlines()):
        try:
            last = datetime.fromisoformat(str(json.loads(line)["ts"]))
        except (ValueError, KeyError, TypeError):
            continue
        return read(path, since=(last if last.tzinfo else last.replace(tzinfo=timezone.utc)) - span)
    return read(path)


BLOCK = 64 * 1024


def _at_or_after(rec: dict, since: datetime) -> bool:
    try:
        ts = datetime.fromisoformat(str(rec["ts"]))
    except (KeyError, ValueError):
        return False
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)) >= since


def _tail_since(path: Path, since: datetime) -> str:
    """The end of the file from (at least) the first line stamped before `since`: records are appended in time order."""
    with open(path, "rb") as fh:
        end = fh.seek(0, 2)
        pos, data = end, b""
        while pos > 0:
            pos = max(0, pos - BLOCK)
            fh.seek(pos)
            data = fh.read(end - pos)
            lines = data.split(b"\n")
            first_whole = lines[1:] if pos > 0 else lines  # the block's first line may be cut
            stamped = next((ln for ln in first_whole if ln.strip()), None)
            if stamped is not None:
                try:
                    rec = json.loads(stamped)
                    if isinstance(rec, dict) and not _at_or_after(rec, since) and "ts" in rec:
                        break
                except ValueError:
                    pass
        if pos > 0:
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return data.decode(errors="replace")
