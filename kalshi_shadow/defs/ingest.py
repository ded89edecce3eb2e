"""Data plane: raw loads and `kalshi_contracts`. The live job that runs them is in `defs/live.py`; alerts are in
`defs/alerts.py`, scheduled health checks in `defs/health.py`.

Each raw-load asset loads the collectors' new Parquet files exactly once, archives the loaded files of closed
hours, and reports data checks in the same step (same short DuckDB connection, same pool slot).
"""


import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse
from kalshi_shadow.monitoring.health import stale_seconds
from kalshi_shadow.raw import RAW_TABLES
from kalshi_shadow.warehouse.compaction import compact_loaded
from kalshi_shadow.warehouse.contracts import refresh_contracts
from kalshi_shadow.warehouse.loader import load_new_files

GROUP = "ingest"
STALE_AFTER = timedelta(seconds=stale_seconds())  # the same setting as the scheduled spot_fresh / quotes_fresh

DESCRIPTIONS = {
    "spot_ticks": "Coinbase BTC-USD ticker messages (one row per match) from the spot collector.",
    "kraken_trades": "Kraken BTC/USD public trades (WebSocket v2 `trade` channel) from the Kraken collector.",
    "bitstamp_trades": "Bitstamp BTC/USD public trades (`live_trades_btcusd`) from the Bitstamp collector.",
    "cfb_index_values": "CF Benchmarks' BRTI as Kalshi relays it (`cfbenchmarks_value`, keyed only): value, 60-s and final-minute averages.",
    "kalshi_quotes": "Kalshi books: top of book per market per poll (REST) or per change (stream, with depth); an empty side is NULL, never 0.",
    "kalshi_exchange_status": "Kalshi's GET /exchange/status per poll: whether the exchange is trading (pauses).",
    "kalshi_lifecycle": "Kalshi market_lifecycle_v2 events (keyed stream): listings, determinations with result and value, settlements.",
    "kalshi_markets": "Kalshi market metadata as fetched, written when it changes (or every 10 minutes).",
    "kalshi_series": "Kalshi series metadata: fee_type and fee_multiplier.",
    "collector_events": "Reconnects, sequence gaps, malformed messages and HTTP errors seen by the collectors.",
}

# Which loaded tables carry a market-data timestamp worth a staleness check, and of what.
FRESHNESS_CHECKED = {"spot_ticks", "kalshi_quotes"}

QUOTE_SANITY_SQL = """
SELECT count(*) FILTER (WHERE yes_bid > yes_ask OR no_bid > no_ask)                        AS crossed,
       count(*) FILTER (WHERE least(yes_bid, yes_ask, no_bid, no_ask) < 0
                           OR greatest(yes_bid, yes_ask, no_bid, no_ask) > 1)             AS out_of_range,
       count(*) FILTER (WHERE yes_ask <> 1 - no_bid OR no_ask <> 1 - yes_bid)             AS inconsistent
FROM kalshi_quotes WHERE ts > $since   -- the last hour (zone maps on ts): flat however long the history
"""


# Fee schedule changes (each schedule that differs from the one before it) in force within the last week or still
# to come: a fee change moves every EV, so a person should know of it (WARN), with its effective time.
FEE_CHANGES_SQL = """
SELECT series_ticker, valid_from, prev_type || ' x' || prev_mult AS before, fee_type || ' x' || fee_multiplier AS after, fee_change_id
FROM (
    SELECT *, lag(fee_type) OVER w AS prev_type, lag(fee_multiplier) OVER w AS prev_mult
    FROM (SELECT *, greatest(ts, coalesce(effective_ts, ts)) AS valid_from FROM kalshi_series)
    WINDOW w AS (PARTITION BY series_ticker ORDER BY valid_from, ts)
)
WHERE prev_type IS NOT NULL AND (fee_type IS DISTINCT FROM prev_type OR fee_multiplier IS DISTINCT FROM prev_mult)
  AND valid_from > now() - INTERVAL 7 DAY
ORDER BY valid_from
"""


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


# Numbers the asset page plots over time (Dagster draws numeric metadata of materializations as series).
EVENT_KINDS = ("malformed", "rate_limited", "http_error", "reconnect", "gap", "silence", "poll_failed")


def _metrics(conn, table: str, res) -> dict[str, float | int]:
    """Per-load series: collector events by kind (429s are rate_limited, 5xx http_error) and quote coverage."""
    if table == "collector_events" and res.min_ts is not None:
        counts = dict(conn.execute("""SELECT kind, sum(coalesce(count, 1))::BIGINT FROM collector_events
                                      WHERE ts BETWEEN ? AND ? GROUP BY kind""", [res.min_ts, res.max_ts]).fetchall())
        return {f"events_{k}": int(counts.get(k, 0)) for k in EVENT_KINDS}
    if table == "kalshi_quotes":
        open_n, quoted = conn.execute("""
            SELECT count(*), count(*) FILTER (WHERE ticker IN (SELECT ticker FROM kalshi_quotes WHERE ts > now() - INTERVAL 5 MINUTE))
            FROM kalshi_contracts WHERE open_ts < now() - INTERVAL 5 MINUTE AND close_ts > now()""").fetchone()
        return {"open_contracts": open_n, "coverage_pct": round(100.0 * quoted / open_n, 2) if open_n else 100.0}
    return {}


def _raw_load_asset(table: str) -> dg.AssetsDefinition:
    checks = [dg.AssetCheckSpec("no_unreadable_raw_files", asset=table,
                                description="Every raw file could be read (unreadable ones are in raw/_quarantine) and none went missing.")]
    if table in FRESHNESS_CHECKED:
        checks.append(dg.AssetCheckSpec("newest_row_is_recent", asset=table, description=f"Newest row is younger than {STALE_AFTER}."))
    if table == "kalshi_series":
        checks.append(dg.AssetCheckSpec("fee_schedule_unchanged", asset=table,
                                        description="No series fee change took effect in the last 7 days or is scheduled (WARN: EVs move)."))
    if table == "kalshi_quotes":
        checks.append(dg.AssetCheckSpec("quotes_are_consistent", asset=table, description="bid <= ask, prices in [0, 1], yes_ask = 1 - no_bid (quotes of the last hour)."))

    @dg.asset(
        name=table,
        group_name=GROUP,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "parquet"},
        owners=["team:data-platform"],
        description=DESCRIPTIONS[table] + " Loaded exactly once from the collectors' raw files.",
        check_specs=checks,
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=3))
        if table in FRESHNESS_CHECKED else None,
    )
    def _load(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            res = load_new_files(conn, warehouse.raw_path, table)
            compacted = compact_loaded(conn, warehouse.raw_path, table)
            failures = conn.execute("SELECT count(*) FROM raw_file_failures WHERE table_name = ?", [table]).fetchone()[0]
            results = [dg.AssetCheckResult(check_name="no_unreadable_raw_files", passed=failures == 0,
                                           severity=dg.AssetCheckSeverity.ERROR, metadata={"unreadable_files": failures})]
            hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
            if table in FRESHNESS_CHECKED:
                # Only rows of the last hour (zone maps on ts skip the rest): flat however long the history; a feed
                # with nothing for an hour is stale anyway.
                newest = conn.execute(f"SELECT max(ts) FROM {table} WHERE ts > ?", [hour_ago]).fetchone()[0]
                age = (datetime.now(timezone.utc) - newest).total_seconds() if newest else None
                results.append(dg.AssetCheckResult(
                    check_name="newest_row_is_recent", passed=age is not None and age < STALE_AFTER.total_seconds(),
                    severity=dg.AssetCheckSeverity.WARN, metadata={"newest_ts": _iso(newest), "age_seconds": age}))
            if table == "kalshi_quotes":
                crossed, out_of_range, inconsistent = conn.execute(QUOTE_SANITY_SQL, {"since": hour_ago}).fetchone()
                results.append(dg.AssetCheckResult(
                    check_name="quotes_are_consistent", passed=crossed + out_of_range + inconsistent == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"crossed": crossed, "out_of_range": out_of_range, "inconsistent": inconsistent}))
            if table == "kalshi_series":
                changes = conn.execute(FEE_CHANGES_SQL).fetchall()
                results.append(dg.AssetCheckResult(
                    check_name="fee_schedule_unchanged", passed=not changes, severity=dg.AssetCheckSeverity.WARN,
                    description="; ".join(f"{s}: {b} -> {a} from {_iso(t)}" for s, t, b, a, _ in changes) or None,
                    metadata={"changes": dg.MetadataValue.json([{"series_ticker": s, "effective_ts": _iso(t), "before": b,
                                                                  "after": a, "fee_change_id": i} for s, t, b, a, i in changes])}))
            total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            metrics = _metrics(conn, table, res)
        if res.failed_files:
            context.log.error(f"{len(res.failed_files)} unreadable {table} files quarantined: {res.failed_files[:5]}")
        return dg.MaterializeResult(
            metadata={"files": res.files, "rows": res.rows, "duplicate_rows": res.duplicates,
                      "files_compacted": compacted["files_compacted"], "min_ts": _iso(res.min_ts), "max_ts": _iso(res.max_ts),
                      "failed_files": len(res.failed_files), "table_rows": total, **metrics},
            check_results=results,
        )

    return _load


raw_assets = [_raw_load_asset(t) for t in RAW_TABLES]


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    owners=["team:data-platform"],
    deps=["kalshi_markets", "kalshi_series"],
    description="One row per Kalshi market: latest static terms, series fees, and (from the settlements asset) the outcome.",
    check_specs=[dg.AssetCheckSpec("contracts_have_terms", asset="kalshi_contracts",
                                   description="Every contract has a close time, a known strike type and fees.")],
)
def kalshi_contracts(warehouse: Warehouse) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        counts = refresh_contracts(conn)
        missing_close, bad_strike, missing_fee = conn.execute("""
            SELECT count(*) FILTER (WHERE close_ts IS NULL),
                   count(*) FILTER (WHERE strike_type NOT IN ('between','greater','greater_or_equal','less','less_or_equal')
                                       OR strike_type IS NULL),
                   count(*) FILTER (WHERE fee_type IS NULL)
            FROM kalshi_contracts""").fetchone()
        per_series = dict(conn.execute("SELECT series_ticker, count(*) FROM kalshi_contracts GROUP BY 1 ORDER BY 1").fetchall())
    check = dg.AssetCheckResult(
        check_name="contracts_have_terms", passed=missing_close + bad_strike + missing_fee == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"missing_close_ts": missing_close, "unknown_strike_type": bad_strike, "missing_fee_type": missing_fee})
    return dg.MaterializeResult(metadata={**counts, "per_series": json.dumps(per_series)}, check_results=[check])


defs = dg.Definitions(
    assets=[*raw_assets, kalshi_contracts],
)
