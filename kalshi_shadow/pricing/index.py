"""The index proxy: a one-second grid of the spot venues' median, what every model prices on.

The contracts settle on CF Benchmarks' BRTI, computed from several venues' books; one venue differs from it by a basis
that persists for minutes. So pricing uses, per UTC second t, the venues' latest trade prices *received* at or before
t (point in time), with these rules, all here:

- a venue silent longer than `venue_stale_seconds()` drops out (its column is NULL);
- a fresh venue more than `MAX_DEVIATION_BP` from the median of the fresh venues is excluded (listed in `excluded`,
  counted by a check): with three venues one bad price cannot move the median, so it is found;
- the median of the rest is the `proxy`; its source is 'proxy' with two or more venues, the venue's name with one
  (the snapshot then carries `index_degraded`), NULL with none (`no_spot`);
- **the official index when keyed**: the newest BRTI value from Kalshi's `cfbenchmarks_value` feed received at or
  before t (`cfb_index_values`), if under `OFFICIAL_STALE_SECONDS` old, is `official`, and then it is the `price`
  (source 'official'): the contracts settle on it. Otherwise the price is the proxy. Both are kept on every second,
  so the proxy's basis to the index of record can be measured.

**Complete, then fixed.** A second is written only once every live venue's raw files are complete up to it (their
frontiers, `warehouse/frontier.py`), and never rewritten, so snapshots and their backfills read the same rows. A
venue whose files lag the newest venue's by more than `VENUE_DOWN_SECONDS` (its collector is down) does not hold
the grid back: its prices are stale by then anyway. A run extends the grid in slices of `SLICE`, so a catch-up after
downtime (or the first run on a warehouse of Coinbase history) never holds more than a slice in memory.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import duckdb

from kalshi_shadow.config import env_number
from kalshi_shadow.warehouse.connection import transaction
from kalshi_shadow.warehouse.frontier import table_frontier

VENUES = ("coinbase", "kraken", "bitstamp")
VENUE_TABLES = {"coinbase": "spot_ticks", "kraken": "kraken_trades", "bitstamp": "bitstamp_trades"}
COLLECTORS = {"coinbase": "spot", "kraken": "kraken", "bitstamp": "bitstamp"}  # each venue's collector (health record name)
VENUE_STALE_SECONDS = 30.0   # default: a venue's last trade older than this is no price
MAX_DEVIATION_BP = 50.0      # a venue further than this from the fresh venues' median is excluded
QUORUM = 2                   # venues needed for a 'proxy' price; fewer is index_degraded
VENUE_DOWN_SECONDS = 120.0   # a venue whose files lag the newest venue's by more than this no longer holds the grid
OFFICIAL = "official"        # the official index's source name and column
OFFICIAL_TABLE = "cfb_index_values"
OFFICIAL_COLLECTOR = "index"  # its collector's health record name
OFFICIAL_INDEX_ID = "BRTI"
OFFICIAL_STALE_SECONDS = 5.0  # the feed ticks once a second; an older value is not the index now
SLICE = timedelta(hours=6)
STATE = "spot_index.frontier_us"  # the last second written (asset_watermarks)

_LATEST = """
{v} AS (
    SELECT coalesce(received_ts, ts) AS seen, {price} AS price FROM {table}
    WHERE {pred} coalesce(received_ts, ts) > $start::TIMESTAMPTZ - INTERVAL {stale} SECOND
      AND coalesce(received_ts, ts) <= $end::TIMESTAMPTZ AND ts <= $end::TIMESTAMPTZ  -- traded before received: prunes by ts
)"""

# The grid comes from the generate_series *table function*: its row count is known to the planner, so the ASOF
# joins run as ASOF joins (an unnested list is estimated at a few rows and planned as a nested loop: quadratic).
INDEX_SQL = """
INSERT INTO spot_index BY NAME
WITH grid AS (SELECT generate_series AS ts FROM generate_series($start::TIMESTAMPTZ, $end::TIMESTAMPTZ, INTERVAL 1 SECOND)),
{latest},
fresh AS (  -- each venue's latest price received at or before the second, if fresh
    SELECT g.ts,
           {fresh},
           CASE WHEN epoch(g.ts) - epoch(t_off.seen) <= {official_stale} THEN t_off.price END AS official,
           t_off.seen AS official_seen
    FROM grid AS g
    {asof}
), judged AS (
    SELECT *, list_median([{cols}]) AS med FROM fresh
), kept AS (  -- u_<venue>: the venue's price if it is in the median
    SELECT *,
           {kept}
    FROM judged
)
SELECT ts, {cols},
       list_filter([{excluded}], lambda x: x IS NOT NULL) AS excluded,
       len(list_filter([{used}], lambda x: x IS NOT NULL))::INTEGER AS n_venues,
       CASE WHEN official IS NOT NULL THEN 'official'
            ELSE CASE len(list_filter([{used}], lambda x: x IS NOT NULL)) WHEN 0 THEN NULL WHEN 1 THEN coalesce({single})
                      ELSE 'proxy' END END AS source,
       list_median([{used}])::DECIMAL(18, 8) AS proxy,
       official::DECIMAL(18, 8) AS official,
       coalesce(official, list_median([{used}]))::DECIMAL(18, 8) AS price,
       CASE WHEN official IS NOT NULL THEN official_seen ELSE list_max([{used_seen}]) END AS newest_seen
FROM kept
"""


def venue_stale_seconds() -> float:
    """A venue whose newest trade is older than this has no price (`KALSHI_SHADOW_VENUE_STALE_SECONDS`, 30). Changing
    it changes only the seconds written from then on: the grid is never rewritten."""
    return env_number("KALSHI_SHADOW_VENUE_STALE_SECONDS", VENUE_STALE_SECONDS, minimum=1)


@lru_cache(maxsize=4)
def _index_sql(stale: float) -> str:
    latest = ",".join([*(_LATEST.format(v=f"t_{v}", table=VENUE_TABLES[v], stale=int(math.ceil(stale)), price="price",
                                        pred="product_id = 'BTC-USD' AND" if v == "coinbase" else "")
                         for v in VENUES),
                       _LATEST.format(v="t_off", table=OFFICIAL_TABLE, stale=int(OFFICIAL_STALE_SECONDS), price="value",
                                      pred=f"index_id = '{OFFICIAL_INDEX_ID}' AND")])
    fresh = ",\n           ".join(
        f"CASE WHEN epoch(g.ts) - epoch(t_{v}.seen) <= {stale} THEN t_{v}.price END AS {v}, "
        f"CASE WHEN epoch(g.ts) - epoch(t_{v}.seen) <= {stale} THEN t_{v}.seen END AS {v}_seen"
        for v in VENUES)
    asof = "\n    ".join(f"ASOF LEFT JOIN t_{v} ON g.ts >= t_{v}.seen" for v in (*VENUES, "off"))
    off = "abs({v} / med - 1) * 10000 > $max_dev"
    kept = ",\n           ".join(f"CASE WHEN NOT ({off.format(v=v)}) THEN {v} END AS u_{v}" for v in VENUES)
    return INDEX_SQL.format(
        latest=latest, fresh=fresh, asof=asof, official_stale=OFFICIAL_STALE_SECONDS, kept=kept, cols=", ".join(VENUES),
        excluded=", ".join(f"CASE WHEN {off.format(v=v)} THEN '{v}' END" for v in VENUES),
        used=", ".join(f"u_{v}" for v in VENUES),
        single=", ".join(f"CASE WHEN u_{v} IS NOT NULL THEN '{v}' END" for v in VENUES),
        used_seen=", ".join(f"CASE WHEN u_{v} IS NOT NULL THEN {v}_seen END" for v in VENUES))


def venue_frontiers(conn: duckdb.DuckDBPyConnection) -> dict[str, datetime | None]:
    """How far each source's raw files are complete: every venue, and the official feed (None until it was keyed)."""
    return {**{v: table_frontier(conn, VENUE_TABLES[v]) for v in VENUES}, OFFICIAL: table_frontier(conn, OFFICIAL_TABLE)}


def index_source_frontier(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """Up to when the grid may be written: the oldest frontier among the live sources (those within
    VENUE_DOWN_SECONDS of the newest); None before any venue has complete data. The official feed's collector
    down does not hold the grid back once it lags that far: pricing falls back to the proxy."""
    frontiers = venue_frontiers(conn)
    if all(frontiers[v] is None for v in VENUES):
        return None
    known = [f for f in frontiers.values() if f is not None]
    newest = max(known)
    return min(f for f in known if (newest - f).total_seconds() <= VENUE_DOWN_SECONDS)


def index_frontier(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """The last second written to the grid (everything up to it is final), None if none yet."""
    row = conn.execute("SELECT value FROM asset_watermarks WHERE asset = ?", [STATE]).fetchall()
    return datetime.fromtimestamp(row[0][0] / 1e6, tz=timezone.utc) if row else None


def refresh_spot_index(conn: duckdb.DuckDBPyConnection) -> int:
    """Extend the grid up to the venues' frontier; returns seconds written. In the caller's connection, one
    transaction per slice (the grid and its watermark move together)."""
    upto = index_source_frontier(conn)
    if upto is None:
        return 0
    end = upto.replace(microsecond=0)
    done = index_frontier(conn)
    if done is None:
        first = conn.execute("SELECT min(seen_ts) FROM spot_venue_trades").fetchall()[0][0]
        if first is None:
            return 0
        start = first.replace(microsecond=0) + timedelta(seconds=1)
    else:
        start = done + timedelta(seconds=1)
    written = 0
    while start <= end:
        stop = min(end, start + SLICE - timedelta(seconds=1))
        with transaction(conn):
            conn.execute(_index_sql(venue_stale_seconds()), {"start": start, "end": stop, "max_dev": MAX_DEVIATION_BP})
            conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                         [STATE, int(stop.timestamp() * 1e6)])
        written += int((stop - start).total_seconds()) + 1
        start = stop + timedelta(seconds=1)
    return written
