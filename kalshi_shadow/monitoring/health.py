"""Platform health, evaluated on a schedule rather than only when data arrives: a dead feed loads nothing, so a check
that runs only inside loads can never see it.

Each check is a `Finding`: the asset it is about, its name, whether it passed, its severity and numbers to show.
Severity follows one rule: ERROR when the platform is blind or wrong (no index, the index below quorum, no quotes, the
quote poller dead, prices outside [0, 1], spot far from its median), WARN when it is degraded (one spot venue down or
disagreeing, gaps, poor coverage, error bursts, stuck books, decisions or scores lagging). Thresholds are module constants or `Rules`-like env settings, named once here.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from collectors.health import read_health
from kalshi_shadow.config import env_number
from kalshi_shadow.decisions import state as decision_state
from kalshi_shadow.pricing.index import (COLLECTORS, MAX_DEVIATION_BP, OFFICIAL_COLLECTOR, OFFICIAL_TABLE, QUORUM, VENUE_TABLES,
                                         VENUES)

ERROR, WARN = "ERROR", "WARN"


def stale_seconds() -> float:
    """Newest spot tick or quote older than this: blind (`KALSHI_SHADOW_STALE_SECONDS`, 180)."""
    return env_number("KALSHI_SHADOW_STALE_SECONDS", 180)



def collector_silent_seconds() -> float:
    """A collector whose last message (or health record) is older is dead to us (`KALSHI_SHADOW_COLLECTOR_SILENT_SECONDS`, 120)."""
    return env_number("KALSHI_SHADOW_COLLECTOR_SILENT_SECONDS", 120, minimum=1)


SPOT_GAP_WARN_SECONDS = 60         # largest silence of the spot feed in the last hour
QUOTE_COVERAGE_MIN = 0.9           # share of open contracts quoted in the last 5 minutes
STUCK_BOOK_MINUTES = 30            # a book unchanged this long ...
STUCK_SPOT_MOVE = 0.005            # ... while spot moved more than this (relative)
SPOT_BAND = 0.10                   # newest spot within this of the last hour's median
ERROR_BURST = {"malformed": 10, "rate_limited": 20, "http_error": 20, "reconnect": 3, "poll_failed": 5}  # per 15 min
DECISION_LAG_SECONDS = 600
INDEX_WINDOW_MINUTES = 5           # quorum and agreement are judged over the index's last minutes
OFFICIAL_GAP_SECONDS = 15         # seconds of the index window priced without the official index (when keyed): its feed is down


def disk_warn_free_gib() -> float:
    """Free GiB on the data disk below which `disk_space` warns (`KALSHI_SHADOW_DISK_WARN_FREE_GIB`, 10: weeks of
    data at the default scale, see BENCHMARKS.md)."""
    return env_number("KALSHI_SHADOW_DISK_WARN_FREE_GIB", 10, minimum=0)


def disk_error_free_gib() -> float:
    """... and below which it is an ERROR (`KALSHI_SHADOW_DISK_ERROR_FREE_GIB`, 3: about a week)."""
    return env_number("KALSHI_SHADOW_DISK_ERROR_FREE_GIB", 3, minimum=0)


@dataclass(frozen=True)
class Finding:
    asset: str
    check: str
    passed: bool
    severity: str
    metadata: dict = field(default_factory=dict)
    description: str = ""


def _age(now: datetime, ts: datetime | None) -> float | None:
    return None if ts is None else (now - ts).total_seconds()


def official_expected(data_dir: Path, env: dict | None = None) -> bool:
    """The official index feed is expected when Kalshi credentials are set, or its collector has run here (a record)."""
    env = os.environ if env is None else env
    return bool(env.get("KALSHI_API_KEY_ID")) or (Path(data_dir) / "health" / f"{OFFICIAL_COLLECTOR}.json").exists()


def collector_liveness(data_dir: Path, now: datetime, silent_seconds: float | None = None) -> list[Finding]:
    """Each collector alive: its health record is fresh and it heard from its exchange recently. The quote poller
    down is ERROR (blind); one spot venue down is WARN: the index proxy goes on with the others (`index_quorum`);
    the official index's and the book stream's collectors down (when keyed) are WARN: pricing falls back to the proxy,
    quotes to the poller."""
    limit = silent_seconds or collector_silent_seconds()
    records = read_health(data_dir)
    out = []
    watched = [(COLLECTORS[v], VENUE_TABLES[v], WARN) for v in VENUES] + [("quotes", "kalshi_quotes", ERROR)]
    if not official_expected(data_dir):
        out.append(Finding(OFFICIAL_TABLE, f"{OFFICIAL_COLLECTOR}_collector_alive", True, WARN, {"keyed": False},
                           "no Kalshi credentials: the official index is not recorded"))
        out.append(Finding("kalshi_quotes", "books_collector_alive", True, WARN, {"keyed": False},
                           "no Kalshi credentials: quotes come from REST polls (no book stream)"))
    else:  # keyed: both WebSocket collectors; each down is WARN (the proxy prices, the poller takes the books over)
        watched += [(OFFICIAL_COLLECTOR, OFFICIAL_TABLE, WARN), ("books", "kalshi_quotes", WARN)]
    for collector, asset, severity in watched:
        rec = records.get(collector)
        if rec is None or "error" in rec:
            path = Path(data_dir) / "health" / f"{collector}.json"
            out.append(Finding(asset, f"{collector}_collector_alive", False, severity, {"health_record": str(path)},
                               f"no readable health record at {path}: the {collector} collector is not running"))
            continue
        updated = datetime.fromisoformat(rec["updated_at"]) if rec.get("updated_at") else None
        last = datetime.fromisoformat(rec["last_message_ts"]) if rec.get("last_message_ts") else None
        record_age, message_age = _age(now, updated), _age(now, last)
        alive = (record_age is not None and record_age < limit and message_age is not None and message_age < limit
                 and rec.get("status") not in ("stopped", "stopping"))
        out.append(Finding(asset, f"{collector}_collector_alive", alive, severity,
                           {"status": rec.get("status"), "pid": rec.get("pid"), "record_age_seconds": record_age,
                            "last_message_age_seconds": message_age, "limit_seconds": limit, "reconnects": rec.get("reconnects", 0)},
                           "" if alive else f"{collector} collector silent: last message {message_age} s ago, record {record_age} s old"))
    return out


def freshness(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """Newest row of each live table, against a window suited to it."""
    limit = stale_seconds()
    day = now - timedelta(days=1)
    spot = conn.execute("SELECT max(coalesce(received_ts, ts)) FROM spot_ticks WHERE ts > ?", [day]).fetchall()[0][0]
    quotes = conn.execute("SELECT max(received_ts) FROM kalshi_quotes WHERE ts > ?", [day]).fetchall()[0][0]
    snaps = conn.execute("SELECT max(created_at) FROM kalshi_edge_snapshot_quotes WHERE created_at > ?", [day]).fetchall()[0][0]
    out = [
        # One venue stale is degradation (the index goes on without it); the index stale is blindness (index_fresh).
        Finding("spot_ticks", "spot_fresh", (_age(now, spot) or 1e18) < limit, WARN,
                {"newest_received_age_seconds": _age(now, spot), "limit_seconds": limit}),
        Finding("kalshi_quotes", "quotes_fresh", (_age(now, quotes) or 1e18) < limit, ERROR,
                {"newest_received_age_seconds": _age(now, quotes), "limit_seconds": limit}),
        # Snapshots wait for every input; they are stale only when quotes are not.
        Finding("kalshi_edge_snapshots", "snapshots_fresh",
                (_age(now, snaps) or 1e18) < 2 * limit or (_age(now, quotes) or 1e18) >= limit, ERROR,
                {"newest_created_age_seconds": _age(now, snaps), "limit_seconds": 2 * limit}),
    ]
    # The versions of the platform's rules file (recorded by the decisions runs); older ones stopped on purpose.
    lag_s = max(decision_state.seconds_behind(conn).values(), default=None)
    replaying = len(decision_state.seconds_behind(conn, replaying=True))
    out.append(Finding("kalshi_would_trades", "decisions_keep_up", lag_s is None or lag_s < DECISION_LAG_SECONDS, WARN,
                       {"seconds_behind_pricing": lag_s, "limit_seconds": DECISION_LAG_SECONDS,
                        "versions_replaying": replaying}))
    return out


def gaps_and_coverage(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """The largest spot silence of the last hour, quote coverage of open contracts, and books stuck while spot moves."""
    largest = conn.execute("""
        SELECT max(gap) FROM (SELECT epoch(seen) - epoch(lag(seen) OVER (ORDER BY seen)) AS gap
                              FROM (SELECT coalesce(received_ts, ts) AS seen FROM spot_ticks
                                    WHERE ts > $now - INTERVAL 1 HOUR AND product_id = 'BTC-USD'))""", {"now": now}).fetchall()[0][0]
    open_n, quoted_n = conn.execute("""
        SELECT count(*), count(*) FILTER (WHERE c.ticker IN (SELECT ticker FROM kalshi_quotes WHERE ts > $now - INTERVAL 5 MINUTE))
        FROM kalshi_contracts AS c
        WHERE c.open_ts < $now - INTERVAL 5 MINUTE AND c.close_ts > $now AND c.status IN ('active', 'open')""",
                                    {"now": now}).fetchall()[0]
    coverage = quoted_n / open_n if open_n else None
    stuck = conn.execute(f"""
        WITH spot AS (SELECT min(price::DOUBLE) AS lo, max(price::DOUBLE) AS hi FROM spot_ticks
                      WHERE ts > $now - INTERVAL {STUCK_BOOK_MINUTES} MINUTE AND product_id = 'BTC-USD'),
        books AS (SELECT ticker, count(DISTINCT (yes_bid, yes_ask)) AS distinct_books, min(ts) AS first_ts
                  FROM kalshi_quotes WHERE ts > $now - INTERVAL {STUCK_BOOK_MINUTES} MINUTE GROUP BY ticker)
        SELECT count(*) FROM books, spot
        WHERE distinct_books = 1 AND first_ts < $now - INTERVAL {STUCK_BOOK_MINUTES - 1} MINUTE
          AND (hi - lo) / lo > {STUCK_SPOT_MOVE}""", {"now": now}).fetchall()[0][0]
    return [
        Finding("spot_ticks", "spot_gaps_last_hour", largest is None or largest < SPOT_GAP_WARN_SECONDS, WARN,
                {"largest_gap_seconds": largest, "limit_seconds": SPOT_GAP_WARN_SECONDS}),
        Finding("kalshi_quotes", "quote_coverage", coverage is None or coverage >= QUOTE_COVERAGE_MIN, WARN,
                {"open_contracts": open_n, "quoted_last_5_min": quoted_n, "coverage": coverage}),
        Finding("kalshi_quotes", "books_not_stuck", stuck == 0, WARN,
                {"books_unchanged_while_spot_moved": stuck, "minutes": STUCK_BOOK_MINUTES}),
    ]


def index_health(conn: duckdb.DuckDBPyConnection, now: datetime, official: bool = False) -> list[Finding]:
    """The index now (`pricing/index.py`): fresh (its newest priced second built from a recent value), priced on the
    official index or a quorum of venues, no venue excluded for disagreeing, over the last `INDEX_WINDOW_MINUTES`
    of wall time; and, when `official` is expected, its feed fresh."""
    limit = stale_seconds()
    seconds, below, proxy_below, no_official, excluded_seconds, excluded, newest_seen, newest_ts = conn.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE source IS NULL OR source NOT IN ('proxy', 'official')),
               count(*) FILTER (WHERE n_venues < {QUORUM}), count(*) FILTER (WHERE official IS NULL),
               count(*) FILTER (WHERE len(excluded) > 0), list_distinct(flatten(list(excluded))), max(newest_seen), max(ts)
        FROM spot_index WHERE ts > $now - INTERVAL {INDEX_WINDOW_MINUTES} MINUTE AND ts <= $now""", {"now": now}).fetchall()[0]
    if newest_seen is None:  # nothing in the window: the newest priced second at all, within a day
        newest_seen = conn.execute("SELECT max(newest_seen) FROM spot_index WHERE ts > ?", [now - timedelta(days=1)]).fetchall()[0][0]
    age = _age(now, newest_seen)
    window = {"window_minutes": INDEX_WINDOW_MINUTES, "seconds_in_window": seconds}
    return [
        Finding("spot_index", "index_fresh", age is not None and age < limit, ERROR,
                {"newest_trade_age_seconds": age, "newest_second": newest_ts.isoformat() if newest_ts else None,
                 "limit_seconds": limit},
                "" if age is not None and age < limit else
                f"the index has no fresh price: newest trade behind it {age if age is None else round(age)} s old"),
        Finding("spot_index", "index_quorum", below == 0, ERROR,
                {**window, "seconds_below_quorum": below, "seconds_proxy_below_quorum": proxy_below, "quorum": QUORUM},
                "" if below == 0 else f"{below} s of the last {INDEX_WINDOW_MINUTES} min priced on fewer than {QUORUM} venues "
                                      "and no official index (index_degraded: no takes)"),
        Finding("spot_index", "venues_agree", excluded_seconds == 0, WARN,
                {**window, "seconds_with_exclusions": excluded_seconds, "excluded_venues": ", ".join(excluded or []),
                 "max_deviation_bp": MAX_DEVIATION_BP},
                "" if excluded_seconds == 0 else f"{', '.join(excluded or [])} more than {MAX_DEVIATION_BP:g} bp from the other "
                                                 f"venues for {excluded_seconds} s: excluded from the index"),
        official_index_fresh(conn, now, official, {**window, "seconds_without_official": no_official}),
    ]


def official_index_fresh(conn: duckdb.DuckDBPyConnection, now: datetime, expected: bool, window: dict) -> Finding:
    """Kalshi's `cfbenchmarks_value` feed (when keyed): the index grid of the last minutes priced on it, all but
    `OFFICIAL_GAP_SECONDS`, and (with nothing in the window) its newest value not older than the stale setting.
    WARN: pricing falls back to the proxy, which settles on the wrong number by its basis."""
    if not expected:
        return Finding(OFFICIAL_TABLE, "official_index_fresh", True, WARN, {"keyed": False},
                       "no Kalshi credentials: the official index is not recorded")
    newest = conn.execute(f"SELECT max(received_ts) FROM {OFFICIAL_TABLE} WHERE ts > ? AND received_ts <= ?",
                          [now - timedelta(days=1), now]).fetchall()[0][0]
    age, missing = _age(now, newest), window["seconds_without_official"]
    ok = missing <= OFFICIAL_GAP_SECONDS if window["seconds_in_window"] else age is not None and age < stale_seconds()
    return Finding(OFFICIAL_TABLE, "official_index_fresh", ok, WARN,
                   {**window, "limit_seconds": OFFICIAL_GAP_SECONDS, "newest_received_age_seconds": age},
                   "" if ok else f"the official index priced {window['seconds_in_window'] - missing} of the last "
                                 f"{window['seconds_in_window']} s (newest value {age if age is None else round(age)} s old): "
                                 "pricing fell back to the proxy")


def sanity(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """Prices in [0, 1] with bid <= ask (last hour), and spot within a band of its last hour's median."""
    bad_quotes = conn.execute("""
        SELECT count(*) FROM kalshi_quotes WHERE ts > $now - INTERVAL 1 HOUR AND (
            yes_bid < 0 OR yes_ask > 1 OR no_bid < 0 OR no_ask > 1 OR yes_bid > yes_ask OR no_bid > no_ask)""",
                              {"now": now}).fetchall()[0][0]
    newest, median = conn.execute("""
        SELECT arg_max(price::DOUBLE, ts), median(price::DOUBLE) FROM spot_ticks
        WHERE ts > $now - INTERVAL 1 HOUR AND product_id = 'BTC-USD'""", {"now": now}).fetchall()[0]
    off = None if newest is None or not median else abs(newest / median - 1)
    return [
        Finding("kalshi_quotes", "prices_sane", bad_quotes == 0, ERROR, {"bad_quotes_last_hour": bad_quotes}),
        Finding("spot_ticks", "spot_within_band", off is None or off < SPOT_BAND, ERROR,
                {"newest": newest, "median_last_hour": median, "relative_distance": off, "band": SPOT_BAND}),
    ]


def error_rates(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """Collector events of the last 15 minutes by kind (from raw collector_events): bursts are degradation."""
    counts = dict(conn.execute("""
        SELECT kind, sum(coalesce(count, 1)) FROM collector_events WHERE ts > $now - INTERVAL 15 MINUTE GROUP BY kind""",
                               {"now": now}).fetchall())
    over = {k: int(counts.get(k, 0)) for k, limit in ERROR_BURST.items() if counts.get(k, 0) > limit}
    gaps = int(counts.get("gap", 0))
    return [
        Finding("collector_events", "error_rates", not over, WARN,
                {**{f"{k}_15min": int(counts.get(k, 0)) for k in ERROR_BURST}, "limits": json.dumps(ERROR_BURST)},
                "" if not over else "error burst: " + ", ".join(f"{k} {v}" for k, v in over.items())),
        Finding("collector_events", "no_continuity_gaps", gaps == 0, WARN, {"gaps_15min": gaps},
                "" if not gaps else f"{gaps} continuity gaps (missed trades or files) in the last 15 minutes"),
    ]


def disk_space(data_dir: Path) -> list[Finding]:
    """Free space where the data lives: WARN below `disk_warn_free_gib()`, ERROR below `disk_error_free_gib()`, so a
    person hears of it days before the disk is full (a collector that cannot write holds its rows in memory and
    retries, but memory is finite)."""
    usage = shutil.disk_usage(data_dir)
    free_gib = usage.free / 2**30
    warn, error = disk_warn_free_gib(), disk_error_free_gib()
    return [Finding("disk", "disk_space", free_gib >= warn, ERROR if free_gib < error else WARN,
                    {"free_gib": round(free_gib, 2), "total_gib": round(usage.total / 2**30, 2),
                     "free_pct": round(100 * usage.free / usage.total, 1), "warn_below_gib": warn, "error_below_gib": error},
                    "" if free_gib >= warn else f"{free_gib:.1f} GiB free on the data disk (warn below {warn:g}, error below {error:g})")]


def clock_steps(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """Files of the last day flushed before the file they follow: the wall clock stepped back (see frontier.py)."""
    n, largest = conn.execute("SELECT count(*), max(step_seconds) FROM raw_clock_steps WHERE detected_at > ?",
                              [now - timedelta(days=1)]).fetchall()[0]
    return [Finding("raw_files", "no_clock_steps", n == 0, WARN, {"steps_last_day": n, "largest_step_seconds": largest},
                    "" if n == 0 else f"the wall clock stepped back {n} time(s) in the last day (largest {largest:.0f} s): "
                                      "decisions pause until the clock passes where it was")]


def evaluate(conn: duckdb.DuckDBPyConnection, data_dir: Path, now: datetime | None = None,
             silent_seconds: float | None = None) -> list[Finding]:
    now = now or datetime.now(timezone.utc)
    return [*collector_liveness(data_dir, now, silent_seconds), *freshness(conn, now),
            *index_health(conn, now, official_expected(data_dir)),
            *gaps_and_coverage(conn, now),
            *sanity(conn, now), *error_rates(conn, now), *disk_space(data_dir), *clock_steps(conn, now)]


# What a finding is about when that is not an asset of the code location (the disk, the raw files of every table).
NOT_ASSETS = ("disk", "raw_files")

# (asset, check, description) of every finding `evaluate` returns, for the Dagster check specs.
SPECS: tuple[tuple[str, str, str], ...] = (
    ("spot_ticks", "spot_collector_alive", "The Coinbase collector's health record is fresh and it heard from Coinbase recently (WARN)."),
    ("kraken_trades", "kraken_collector_alive", "The Kraken collector's health record is fresh and it heard from Kraken recently (WARN)."),
    ("bitstamp_trades", "bitstamp_collector_alive", "The Bitstamp collector's health record is fresh and it heard from Bitstamp recently (WARN)."),
    ("cfb_index_values", "index_collector_alive", "With Kalshi credentials: the official index's collector is alive and heard from Kalshi recently (WARN)."),
    ("kalshi_quotes", "quotes_collector_alive", "The quote poller's health record is fresh and it heard from Kalshi recently."),
    ("kalshi_quotes", "books_collector_alive", "With Kalshi credentials: the book stream's collector is alive and heard from Kalshi recently (WARN: REST polls take over)."),
    ("spot_ticks", "spot_fresh", "The newest Coinbase tick was received recently (WARN: the index goes on without it)."),
    ("kalshi_quotes", "quotes_fresh", "The newest quote was received recently (ERROR: blind)."),
    ("kalshi_edge_snapshots", "snapshots_fresh", "Snapshots keep coming while quotes do."),
    ("spot_index", "index_fresh", "The index's newest price comes from a recent value (ERROR: blind)."),
    ("spot_index", "index_quorum", "Every second of the index's last 5 minutes priced on the official index or a quorum of venues (ERROR: index_degraded, no takes)."),
    ("cfb_index_values", "official_index_fresh", "With Kalshi credentials: the index of the last 5 minutes priced on the official index, all but 15 s (WARN: the proxy prices)."),
    ("spot_index", "venues_agree", "No venue excluded from the index for disagreeing in the last 5 minutes (WARN)."),
    ("kalshi_would_trades", "decisions_keep_up", "Every rule set has decided close to the pricing frontier."),
    ("spot_ticks", "spot_gaps_last_hour", "Largest silence of the spot feed in the last hour."),
    ("kalshi_quotes", "quote_coverage", "Share of open contracts quoted in the last 5 minutes."),
    ("kalshi_quotes", "books_not_stuck", "No book unchanged for 30 minutes while spot moved."),
    ("kalshi_quotes", "prices_sane", "Prices in [0, 1] and bid <= ask in the last hour."),
    ("spot_ticks", "spot_within_band", "The newest spot is within 10% of the last hour's median."),
    ("collector_events", "error_rates", "Malformed messages, 429s, 5xx, reconnects in the last 15 minutes under their limits."),
    ("collector_events", "no_continuity_gaps", "No missed trades or files recorded by the collectors in the last 15 minutes."),
    ("disk", "disk_space", "Free space on the data disk (WARN, then ERROR well before it is full)."),
    ("raw_files", "no_clock_steps", "The wall clock did not step backwards in the last day (files flushed out of order)."),
)
