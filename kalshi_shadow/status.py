"""`kalshi-shadow status`: is the platform up, at a glance.

Reads what `kalshi-shadow up` and the collectors leave on disk, never anything that could hold up the pipeline:

  processes    <data_dir>/run/up.json: each child alive or dead (its pid checked in /proc, not taken on trust), pid,
               uptime, restarts, crash loop or held down
  collectors   <data_dir>/health/*.json: age of the last message
  tables       newest row of the main tables (within the last day) and the live lag (p95 of created_at - quote_ts
               over snapshots created in the last 10 minutes), in one short read-only opening whose queries are all
               bounded by time; a warehouse a writer holds is reported as such and skipped
  decisions    each rule set version: live (how far behind) or replaying (progress), its cash and open exposure
  checks       <data_dir>/alerts.jsonl (its last two days): the last record per alert key, firing ("*_failed", "*_reminder", or a
               "run_failure" of the last hour: run failures are never "recovered") or cleared ("*_recovered"), and
               whether the last alert was delivered

Exit code 1 when something is down (no `up` running, a dead or crash-looping process, a collector with no message
for --stale-seconds), else 0. `--json` prints the same as one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kalshi_shadow.alerts import journal
from kalshi_shadow.config import ConfigError, Settings

STALE_SECONDS = 120.0
LAG_WINDOW_MINUTES = 10
RUN_FAILURE_FIRING_SECONDS = 3600.0  # a run failure has no recovery record: it counts as failing now for this long
FRESHNESS_WINDOW = timedelta(days=1)
JOURNAL_SPAN = timedelta(days=2)  # alerts read back this far from the newest (firing ones are reminded hourly)  # newest row looked for in this window only; older than that shows as "none"
# what is shown -> (table, the column that says how fresh it is)
FRESHNESS = {
    "spot_ticks": ("spot_ticks", "ts"),
    "kraken_trades": ("kraken_trades", "ts"),
    "bitstamp_trades": ("bitstamp_trades", "ts"),
    "cfb_index_values": ("cfb_index_values", "ts"),  # the official index (keyed only)
    "spot_index": ("spot_index", "ts"),
    "kalshi_quotes": ("kalshi_quotes", "ts"),
    "kalshi_edge_snapshots": ("kalshi_edge_snapshot_quotes", "created_at"),  # the view's model rows are not needed
    "kalshi_would_trades": ("kalshi_would_trades", "decided_ts"),
    "settlements": ("kalshi_contracts", "outcome_known_ts"),  # scores are a view of them: always current
}
KEYED_ONLY = ("cfb_index_values",)  # tables only keyed runs record


def _parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _age(value: Any, now: datetime) -> float | None:
    ts = _parse_ts(value)
    return None if ts is None else round((now - ts).total_seconds(), 1)


def _pid_running(pid: int | None, argv: list[str] | None = None) -> bool:
    """A live, non-zombie process; with `argv`, one whose command line ends with it (so a reused pid does not count)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rindex(")") + 2] == "Z":
        return False
    if argv:
        from kalshi_shadow.supervisor import _cmdline_matches

        return _cmdline_matches(pid, argv)
    return True


def _up_cmdline(pid: int | None) -> bool:
    if not _pid_running(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"up" in args


def processes(data_dir: Path, now: datetime) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / "run" / "up.json").read_text())
    except FileNotFoundError:
        return {"up": {"running": False, "reason": "never started for this data dir (no run/up.json)"}, "children": {}}
    except (OSError, ValueError) as exc:
        return {"up": {"running": False, "reason": f"unreadable run/up.json: {exc}"}, "children": {}}
    up_running = not state.get("stopped") and _up_cmdline(state.get("pid"))
    up: dict[str, Any] = {"running": up_running, "pid": state.get("pid"), "started_at": state.get("started_at"),
                          "uptime_seconds": _age(state.get("started_at"), now) if up_running else None,
                          "updated_at": state.get("updated_at")}
    if not up_running:
        up["reason"] = "stopped" if state.get("stopped") else "up is not running (killed?)"
    children = {}
    for name, rec in (state.get("children") or {}).items():
        alive = bool(rec.get("alive")) and _pid_running(rec.get("pid"), rec.get("argv"))
        children[name] = {
            "alive": alive, "pid": rec.get("pid") if alive else None,
            "uptime_seconds": _age(rec.get("started_at"), now) if alive else None,
            "restarts": rec.get("restarts", 0), "crash_loop": bool(rec.get("crash_loop")),
            "held": bool(rec.get("held")), "last_exit_code": rec.get("last_exit_code"),
            "last_exit_cause": rec.get("last_exit_cause"), "last_exit_at": rec.get("last_exit_at"),
            "restart_at": rec.get("restart_at") if up_running else None,
        }
    return {"up": up, "children": children}


def collectors(data_dir: Path, now: datetime, stale_seconds: float) -> dict[str, Any]:
    from collectors.health import read_health

    out = {}
    for name, h in read_health(data_dir).items():
        if "error" in h and "collector" not in h:
            out[name] = {"error": h["error"], "stale": True}
            continue
        age = _age(h.get("last_message_ts"), now)
        since_start = _age(h.get("started_at"), now)
        # No message yet is only stale once the collector has had stale_seconds to get one.
        stale = age > stale_seconds if age is not None else (since_start is None or since_start > stale_seconds)
        out[name] = {"status": h.get("status"), "last_message_age_seconds": age, "stale": stale,
                     "rows_acknowledged": h.get("rows_acknowledged", 0), "reconnects": h.get("reconnects", 0),
                     "errors": h.get("errors", {}), "note": _collector_note(name, h)}
    return out


def _collector_note(name: str, h: dict[str, Any]) -> str:
    """What a collector's record says beyond liveness: where the books come from, and whether the exchange trades."""
    if name == "books":
        return (f"books synced {h.get('books_synced', 0)}/{h.get('books', 0)}, gaps {h.get('gaps', 0)} "
                f"(re-snapshots {h.get('counters', {}).get('resnapshots', 0)})")
    if name == "quotes":
        trading = {True: "exchange trading", False: "exchange PAUSED", None: "exchange status unknown"}[h.get("trading_active")]
        source = {"stream": "quotes from the book stream (polls stand by)", "rest": "quotes from REST polls"}.get(h.get("quotes_from"), "")
        return ", ".join(x for x in (source, trading) if x)
    return ""


def warehouse(db_path: Path, lock_timeout: float, now: datetime) -> dict[str, Any]:
    """Freshness per table, the live lag and where each rule set version stands, in one short read-only opening.

    Every query is bounded by time (the last `FRESHNESS_WINDOW`, on columns the tables are appended in order of, so
    DuckDB skips older row groups) or reads a small state table: the cost does not grow with history, and the file
    is held for milliseconds however old the warehouse."""
    import duckdb

    from kalshi_shadow.warehouse.connection import WarehouseLockedError, connect

    if not db_path.exists():
        return {"path": str(db_path), "error": "not created yet"}
    since = now - FRESHNESS_WINDOW
    try:
        conn = connect(db_path, read_only=True, timeout_seconds=lock_timeout)
    except WarehouseLockedError as exc:
        return {"path": str(db_path), "locked": True, "error": f"locked by a writer, skipped ({exc})"}
    except (duckdb.Error, OSError) as exc:
        return {"path": str(db_path), "error": f"{type(exc).__name__}: {exc}"}
    try:
        existing = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        tables: dict[str, Any] = {}
        for label, (table, col) in FRESHNESS.items():
            if table not in existing:
                tables[label] = {"missing": True}
                continue
            try:
                newest = conn.execute(f"SELECT max({col}) FROM {table} WHERE {col} > ?", [since]).fetchall()[0][0]
            except duckdb.Error as exc:  # e.g. a warehouse not yet migrated by this release (`up` migrates it)
                tables[label] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                continue
            tables[label] = {"newest_age_seconds": None if newest is None else round((now - newest).total_seconds(), 1),
                             "column": f"{table}.{col}" if table != label else col}
        lag = None
        if "kalshi_edge_snapshot_quotes" in existing:
            lag = conn.execute("""SELECT quantile_cont(epoch(created_at - quote_ts), 0.95) FROM kalshi_edge_snapshot_quotes
                                  WHERE created_at > ?""", [now - timedelta(minutes=LAG_WINDOW_MINUTES)]).fetchall()[0][0]
        try:
            index = _index(conn, since) if "spot_index" in existing else None
        except duckdb.Error as exc:  # a warehouse not yet migrated by this release
            index = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        try:
            decisions = _decisions(conn) if "kalshi_decision_state" in existing else None
        except duckdb.Error as exc:  # a warehouse not yet migrated by this release
            decisions = {"error": f"{type(exc).__name__}: {exc}"[:200], "versions": {}}
    except (duckdb.Error, OSError) as exc:
        return {"path": str(db_path), "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    return {"path": str(db_path), "tables": tables, "live_lag_p95_seconds": None if lag is None else round(float(lag), 1),
            "live_lag_window_minutes": LAG_WINDOW_MINUTES, "freshness_window_hours": FRESHNESS_WINDOW.total_seconds() / 3600,
            "index": index, "decisions": decisions}


def _index(conn, since: datetime) -> dict[str, Any] | None:
    """The index's newest second: the price and its source, the proxy and the official index (NULL unless keyed and
    fresh), and each venue's price and basis to the proxy (bp), or why it is out."""
    from kalshi_shadow.pricing.index import VENUES

    cols = ", ".join(VENUES)
    row = conn.execute(f"""SELECT ts, price::DOUBLE, source, n_venues, excluded, newest_seen, proxy::DOUBLE, official::DOUBLE, {cols}
                           FROM spot_index WHERE ts > ? ORDER BY ts DESC LIMIT 1""", [since]).fetchall()
    if not row:
        return None
    ts, price, source, n, excluded, newest_seen, proxy, official, *prices = row[0]

    def bp(x: float | None, ref: float | None) -> float | None:
        return None if x is None or not ref else round((x / ref - 1) * 1e4, 1)

    venues = {}
    for v, p in zip(VENUES, prices):
        p = None if p is None else float(p)
        venues[v] = {"price": p, "basis_bp": bp(p, proxy), "state": "stale" if p is None else "excluded" if v in excluded else "in"}
    return {"second": ts.isoformat(), "price": price, "source": source, "n_venues": n, "proxy": proxy, "official": official,
            "proxy_basis_to_official_bp": bp(proxy, official),
            "newest_seen": newest_seen.isoformat() if newest_seen else None, "venues": venues}


def _decisions(conn) -> dict[str, Any]:
    """Each rule set version in the warehouse: live or replaying (with progress), how far behind, and whether the
    platform's rules file still holds it (an edited set leaves its old version behind, no longer deciding), as the
    decisions runs recorded it."""
    from kalshi_shadow.decisions import state as decision_state

    target = decision_state.target(conn)
    out = {}
    for st in decision_state.load_all(conn):
        behind = None if target is None or st.frontier is None else max(0.0, round((target - st.frontier).total_seconds(), 1))
        out[st.version] = {"in_rules_file": st.in_rules_file, "replaying": st.replaying,
                           "replay_progress": None if not st.replaying else round(st.progress(target) or 0.0, 4),
                           "frontier": st.frontier.isoformat() if st.frontier else None, "seconds_behind": behind,
                           "cash": round(st.cash, 2), "open_exposure": round(st.exposure, 2)}
    return {"target": target.isoformat() if target else None, "versions": out}


def _alert_key(rec: dict[str, Any]) -> str:
    if rec.get("key"):
        return str(rec["key"])
    if rec.get("asset") or rec.get("check"):
        return f"check:{rec.get('asset')}:{rec.get('check')}"
    if rec.get("job"):
        return f"run:{rec['job']}"
    return str(rec.get("kind", "?"))


def _firing_kind(kind: str) -> bool:
    return kind.endswith("_failed") or kind.endswith("_reminder") or kind == "run_failure"


def alerts(data_dir: Path, now: datetime) -> dict[str, Any]:
    """The last record per alert key (firing or cleared) and the last alert with its delivery, from alerts.jsonl."""
    path = data_dir / "alerts.jsonl"
    try:
        records = journal.read_last(path, JOURNAL_SPAN)  # a half-written last line or junk is skipped
    except OSError as exc:
        return {"path": str(path), "error": str(exc), "firing": [], "last": None}
    latest: dict[str, dict[str, Any]] = {}
    since: dict[str, Any] = {}
    last = None
    for rec in records:
        last = rec
        kind = str(rec.get("kind", ""))
        if _firing_kind(kind) or kind.endswith("_recovered"):
            key = _alert_key(rec)
            before = latest.get(key)
            if not (before and _firing_kind(str(before.get("kind", ""))) and _firing_kind(kind)):
                since[key] = rec.get("ts")  # start of this firing (or cleared) streak; reminders do not move it
            latest[key] = rec

    def firing_now(r: dict[str, Any]) -> bool:
        kind = str(r.get("kind", ""))
        if kind == "run_failure":
            age = _age(r.get("ts"), now)
            return age is not None and age <= RUN_FAILURE_FIRING_SECONDS
        return _firing_kind(kind)

    firing = [{"key": k, "kind": r.get("kind"), "since": since.get(k), "severity": r.get("severity"),
               "title": r.get("title") or r.get("message")}
              for k, r in latest.items() if firing_now(r)]
    last_out = None
    if last is not None:
        delivery = last.get("delivery")
        last_out = {"ts": last.get("ts"), "key": _alert_key(last), "kind": last.get("kind"),
                    "title": last.get("title") or last.get("message"),
                    "delivered": delivery.get("ok") if isinstance(delivery, dict) else None,
                    "delivery_error": delivery.get("error") if isinstance(delivery, dict) else None}
    return {"path": str(path), "firing": firing, "last": last_out}


def collect(settings: Settings, *, stale_seconds: float = STALE_SECONDS, lock_timeout: float = 2.0) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    procs = processes(settings.data_dir, now)
    cols = collectors(settings.data_dir, now, stale_seconds)
    problems = []
    if not procs["up"]["running"]:
        problems.append(f"up: {procs['up'].get('reason', 'not running')}")
    for name, c in procs["children"].items():
        if procs["up"]["running"] and not c["alive"]:
            problems.append(f"{name}: dead" + (" (held down)" if c["held"] else ""))
        if c["crash_loop"]:
            problems.append(f"{name}: crash loop")
    for name, c in cols.items():
        if c["stale"]:
            age = c.get("last_message_age_seconds")
            problems.append(f"collector {name}: " + (f"last message {age:.0f}s ago" if age is not None else "no message yet"))
    alert_state = alerts(settings.data_dir, now)
    # An ERROR check failing now means blind or wrong (no fresh spot, a collector silent, bad prices): down too.
    for f in alert_state["firing"]:
        if str(f.get("severity") or "").upper() == "ERROR":
            problems.append(f"failing: {f['key']}")
    from kalshi_shadow.monitoring.health import official_expected

    return {"now": now.isoformat(), "data_dir": str(settings.data_dir), "ok": not problems, "problems": problems,
            "keyed": official_expected(settings.data_dir), "processes": procs, "collectors": cols,
            "warehouse": warehouse(settings.db_path, lock_timeout, now), "alerts": alert_state}


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{seconds:.0f}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render(st: dict[str, Any]) -> str:
    out = [f"data dir: {st['data_dir']}"]
    up = st["processes"]["up"]
    if up["running"]:
        out.append(f"up: running, pid {up['pid']}, up {_dur(up['uptime_seconds'])}")
    else:
        out.append(f"up: NOT RUNNING ({up.get('reason')})")
    for name, c in st["processes"]["children"].items():
        if c["alive"]:
            state = f"alive  pid {c['pid']:<8} up {_dur(c['uptime_seconds']):>8}"
        else:
            state = f"DEAD   last exit: {c.get('last_exit_cause') or '-'}"
            if c["held"]:
                state += ", held down (KALSHI_SHADOW_NO_RESTART)"
            elif c.get("restart_at"):
                state += f", restart at {c['restart_at']}"
        flags = "  CRASH LOOP" if c["crash_loop"] else ""
        out.append(f"  {name:18s} {state}  restarts {c['restarts']}{flags}")
    out.append("collectors:")
    if not st["collectors"]:
        out.append("  (no health records yet)")
    for name, c in st["collectors"].items():
        if "error" in c:
            out.append(f"  {name:8s} {c['error']}")
            continue
        age = c["last_message_age_seconds"]
        last = f"{_dur(age)} ago" if age is not None else "never"
        out.append(f"  {name:8s} {c['status'] or '?':10s} last message {last:>10s}{'  STALE' if c['stale'] else ''}  "
                   f"rows {c['rows_acknowledged']}  reconnects {c['reconnects']}" + (f"  ({c['note']})" if c.get("note") else ""))
    wh = st["warehouse"]
    out.append(f"warehouse {wh['path']}:")
    if "error" in wh:
        out.append(f"  {wh['error']}")
    else:
        for t, info in wh["tables"].items():
            if info.get("missing"):
                out.append(f"  {t:28s} (no table)")
            elif info.get("error"):
                out.append(f"  {t:28s} {info['error']}")
            else:
                age = info["newest_age_seconds"]
                if age is None and t in KEYED_ONLY and not st.get("keyed"):
                    out.append(f"  {t:28s} not recorded without Kalshi credentials")
                    continue
                out.append(f"  {t:28s} newest {info['column']} "
                           + ((_dur(age) + " ago") if age is not None else f"none in the last {wh['freshness_window_hours']:g} h"))
        lag = wh["live_lag_p95_seconds"]
        out.append(f"  live lag p95 (created_at - quote_ts, last {wh['live_lag_window_minutes']} min): "
                   + (f"{lag:.1f}s" if lag is not None else "no snapshots"))
        ix = wh.get("index")
        if ix and "error" in ix:
            out.append(f"index: {ix['error']}")
        elif ix:
            if ix["price"] is None:
                head = "NO PRICE: no fresh venue or official index (quotes get no_spot)"
            else:
                head = f"{ix['price']:.2f} from {ix['source']} ({ix['n_venues']} venue{'s' * (ix['n_venues'] != 1)} in the proxy)"
            out.append(f"index at {ix['second']}: {head}" + ("" if ix["source"] in ("proxy", "official") else "  DEGRADED"))
            if ix.get("official") is not None:
                b = ix["proxy_basis_to_official_bp"]
                out.append(f"  {'official':10s} {'in':9s} {ix['official']:.2f}" + (f"  proxy {b:+.1f} bp from it" if b is not None else ""))
            for v, d in ix["venues"].items():
                basis = f"basis {d['basis_bp']:+.1f} bp" if d["basis_bp"] is not None else ""
                out.append(f"  {v:10s} {d['state']:9s}" + (f" {d['price']:.2f}  {basis}" if d["price"] is not None else ""))
        dec = wh.get("decisions")
        if dec and dec["versions"]:
            out.append("decisions (rule set versions):")
            for v, d in dec["versions"].items():
                if d["replaying"]:
                    where = f"REPLAYING {100 * (d['replay_progress'] or 0):.0f}% (at {d['frontier'] or 'the start'})"
                else:
                    where = "live, " + (f"{_dur(d['seconds_behind'])} behind" if d["seconds_behind"] is not None else "not started")
                retired = "" if d["in_rules_file"] else "  (not in the rules file: stopped)"
                out.append(f"  {v:28s} {where}  cash {d['cash']:.2f}  open {round(d['open_exposure'], 2) + 0.0:.2f}{retired}")
    al = st["alerts"]
    out.append("checks failing now: " + (", ".join(f"{f['key']} ({f['kind']}, since {f['since']})" for f in al["firing"]) or "none"))
    last = al["last"]
    if last is None:
        out.append("last alert: none")
    else:
        delivered = {True: "delivered", False: f"NOT delivered ({last.get('delivery_error')})",
                     None: f"not sent: {last.get('delivery_error') or 'no delivery record'}"
                           + (" (set KALSHI_SHADOW_ALERT_URLS)" if last.get("delivery_error") == "not configured" else "")}[last["delivered"]]
        out.append(f"last alert: {last['ts']} {last['key']} {last['kind']}: {last.get('title') or ''} [{delivered}]")
    out.append("OK" if st["ok"] else "DOWN: " + "; ".join(st["problems"]))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow status", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    ap.add_argument("--stale-seconds", type=float, default=STALE_SECONDS,
                    help=f"a collector with no message for this long is down (default {STALE_SECONDS:g})")
    ap.add_argument("--lock-timeout", type=float, default=2.0,
                    help="seconds to wait for a writer to release the warehouse before skipping it (default 2)")
    args = ap.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"kalshi-shadow status: {exc}", file=sys.stderr)
        return 2
    st = collect(settings, stale_seconds=args.stale_seconds, lock_timeout=args.lock_timeout)
    print(json.dumps(st, indent=2, default=str) if args.json else render(st))
    return 0 if st["ok"] else 1
