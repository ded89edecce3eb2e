"""The daily health digest: what a person running the platform unattended wants to read once a day, even when no
alert fired. Sent through the same channel as alerts (apprise, `KALSHI_SHADOW_ALERT_URLS`) and kept in the journal.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from kalshi_shadow.alerts import journal


def _since(records: list[dict], since: datetime) -> list[dict]:
    """The records with a `ts` at or after `since` (one without a readable ts is skipped)."""
    out = []
    for rec in records:
        try:
            if datetime.fromisoformat(rec["ts"]) >= since:
                out.append(rec)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def compose(conn: duckdb.DuckDBPyConnection, data_dir: Path, end: datetime) -> tuple[str, str, dict]:
    """(title, markdown body, figures) for the 24 hours ending at `end`."""
    start = end - timedelta(days=1)
    alerts = _since(journal.read(data_dir / "alerts.jsonl", since=start), start)
    failed = Counter(a["key"] for a in alerts if str(a.get("kind", "")).endswith("_failed") or a.get("kind") == "run_failure")
    undelivered = sum(1 for a in alerts if (a.get("delivery") or {}).get("ok") is False)
    restarts = _since(journal.read(data_dir / "run" / "restarts.jsonl", since=start), start)
    exits = [r for r in restarts if r.get("kind") == "exit"]
    loops = [r for r in restarts if r.get("kind") == "crash_loop"]
    gap_hours = conn.execute("""
        SELECT time_bucket(INTERVAL 1 HOUR, grid_ts) AS hour, max(gap_seconds) AS longest
        FROM spot_vol WHERE grid_ts > $start AND grid_ts <= $end GROUP BY 1 HAVING max(gap_seconds) > 60 ORDER BY 1""",
                             {"start": start, "end": end}).fetchall()
    quote_hours = conn.execute("""
        SELECT count(DISTINCT time_bucket(INTERVAL 1 HOUR, received_ts)) FROM kalshi_quotes
        WHERE ts > $start - INTERVAL 1 HOUR AND received_ts > $start AND received_ts <= $end""", {"start": start, "end": end}).fetchall()[0][0]
    errors = dict(conn.execute("""
        SELECT collector || ' ' || kind, sum(coalesce(count, 1))::BIGINT FROM collector_events
        WHERE ts > $start AND ts <= $end GROUP BY 1 ORDER BY 2 DESC""", {"start": start, "end": end}).fetchall())
    last_read = conn.execute("SELECT max(observed_at) FROM kalshi_settlement_observations").fetchall()[0][0]
    # From the positions (one row per take, payouts as first read), not the whole log: the cost of a day's digest
    # does not grow with the months of skips behind it.
    decisions = conn.execute("""
        SELECT rule_set_version, count(*) FILTER (WHERE decided_ts > $start) AS takes,
               count(*) FILTER (WHERE known_ts > $start) AS settled,
               round(coalesce(sum(payout - cost) FILTER (WHERE known_ts > $start), 0), 2) AS realised,
               count(*) FILTER (WHERE known_ts IS NULL) AS open
        FROM kalshi_decision_positions GROUP BY 1 ORDER BY 1""", {"start": start}).fetchall()
    lines = [f"24 h to {end:%Y-%m-%d %H:%M} UTC", "",
             f"Failed checks and runs: {sum(failed.values())}" + (" (" + ", ".join(f"{k} x{n}" for k, n in failed.most_common(8)) + ")" if failed else ""),
             f"Alerts not delivered: {undelivered}",
             f"Hours with a spot gap over 60 s: {len(gap_hours)}" + ("" if not gap_hours else " (" + ", ".join(
                 f"{h:%H:00} {g:.0f}s" for h, g in gap_hours[:12]) + ")"),
             f"Hours with quotes: {quote_hours} of 24",
             f"Restarts: {len(exits)}" + (" (" + ", ".join(f"{c} x{n}" for c, n in Counter(r.get('child') for r in exits).items()) + ")" if exits else "")
             + (f"; crash loops: {len(loops)}" if loops else ""),
             "Collector events: " + (", ".join(f"{k} {v}" for k, v in errors.items()) or "none"),
             f"Last settlement read: {last_read:%Y-%m-%d %H:%M} UTC" if last_read else "Last settlement read: never",
             "", "Decisions (takes / settled / realised PnL in the 24 h, open now):"]
    lines += [f"  {v}: {t} / {s} / {r:+.2f} / {o}" for v, t, s, r, o in decisions] or ["  none"]
    healthy = not failed and not gap_hours and not loops and undelivered == 0
    title = f"kalshi-shadow daily digest {end:%Y-%m-%d}: " + ("all quiet" if healthy else "needs a look")
    figures = {"failed": sum(failed.values()), "gap_hours": len(gap_hours), "restarts": len(exits), "crash_loops": len(loops),
               "undelivered": undelivered, "quote_hours": quote_hours, "collector_events": sum(errors.values()),
               "decision_sets": len(decisions)}
    return title, "\n".join(lines), figures
