"""Pricing: the point-in-time vol grid and daily-partitioned edge snapshots.

Live: the live job (`defs/live.py`) prices, after each load, every quote whose inputs are now complete.
Backfill (materialize partitions in the UI): deletes the day's snapshots and recomputes them from the warehouse
tables; the rows equal what the live runs wrote (created_at aside).
"""

import os
from datetime import date, datetime, timedelta, timezone

import dagster as dg

from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse
from kalshi_shadow.pricing.index import MAX_DEVIATION_BP, QUORUM, VENUES, index_frontier, refresh_spot_index, venue_stale_seconds
from kalshi_shadow.models import model_names
from kalshi_shadow.pricing.rules import RULES, lot_size
from kalshi_shadow.pricing.snapshots import RUN_ROWS, price_new_quotes, recompute_day, refresh_spot_vol, run_params, seq_range

GROUP = "pricing"
# end_offset=1: the UTC day in progress is a partition too, so live runs can write it.
daily = dg.DailyPartitionsDefinition(start_date=os.environ.get("KALSHI_SHADOW_START_DATE", "2026-01-01"), timezone="UTC", end_offset=1)
MAX_LAG_SECONDS = float(os.environ.get("KALSHI_SHADOW_MAX_LAG_SECONDS", "45"))


# The index's health over the last few minutes of the grid (the newest seconds written, so flat however long the
# history): how many seconds lacked a quorum, and which venues were excluded for disagreeing.
INDEX_HEALTH_SQL = """
SELECT count(*) AS seconds, count(*) FILTER (WHERE n_venues < $quorum) AS below_quorum,
       count(*) FILTER (WHERE price IS NULL) AS unpriced, list_distinct(flatten(list(excluded))) AS excluded_venues,
       count(*) FILTER (WHERE len(excluded) > 0) AS seconds_with_exclusions, max(ts) AS newest
FROM spot_index WHERE ts > $since
"""


@dg.asset(
    group_name="ingest",
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    owners=["team:quant"],
    deps=["spot_ticks", "kraken_trades", "bitstamp_trades"],
    description=(f"The index proxy that pricing uses: per UTC second, the median of the venues' ({', '.join(VENUES)}) "
                 f"latest prices received by then; a venue silent over {venue_stale_seconds():g} s drops out, one more than "
                 f"{MAX_DEVIATION_BP:g} bp from the median is excluded, fewer than {QUORUM} venues is index_degraded. "
                 "Written once every live venue is complete up to the second, never changed."),
    check_specs=[
        dg.AssetCheckSpec("index_quorum", asset="spot_index",
                          description=f"Every second of the last 5 minutes of the grid had {QUORUM}+ venues (WARN: priced on one venue or none)."),
        dg.AssetCheckSpec("venues_agree", asset="spot_index",
                          description=f"No venue was excluded for being over {MAX_DEVIATION_BP:g} bp from the others in the last 5 minutes."),
    ],
)
def spot_index(warehouse: Warehouse) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        added = refresh_spot_index(conn)
        newest = index_frontier(conn)
        since = (newest or datetime.now(timezone.utc)) - timedelta(minutes=5)
        seconds, below, unpriced, excluded, with_excl, _ = conn.execute(INDEX_HEALTH_SQL, {"quorum": QUORUM, "since": since}).fetchall()[0]
    window = {"seconds": seconds, "since": since.isoformat()}
    return dg.MaterializeResult(
        metadata={"seconds_added": added, "newest_second": newest.isoformat() if newest else None,
                  "seconds_below_quorum_5m": below, "seconds_unpriced_5m": unpriced},
        check_results=[
            dg.AssetCheckResult(check_name="index_quorum", passed=seconds > 0 and below == 0, severity=dg.AssetCheckSeverity.WARN,
                                metadata={**window, "below_quorum": below, "unpriced": unpriced}),
            dg.AssetCheckResult(check_name="venues_agree", passed=with_excl == 0, severity=dg.AssetCheckSeverity.WARN,
                                metadata={**window, "seconds_with_exclusions": with_excl, "excluded_venues": ", ".join(excluded or [])}),
        ])


@dg.asset(
    group_name="ingest",  # runs in the ingest job, right after new spot ticks land
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "numpy"},
    owners=["team:quant"],
    deps=["spot_index"],
    description="One-minute EWMA volatility of the index proxy (half-life 30 min, floor 20%, cap 300%), from its value at "
                "each minute, computed only up to the index's frontier (so a grid point never changes).",
)
def spot_vol(warehouse: Warehouse) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        added = refresh_spot_vol(conn)
        latest = conn.execute("SELECT grid_ts, vol FROM spot_vol ORDER BY grid_ts DESC LIMIT 1").fetchall()
    meta = {"rows_added": added}
    if latest:
        meta.update(latest_grid_ts=latest[0][0].isoformat(), latest_vol=float(latest[0][1]))
    return dg.MaterializeResult(metadata=meta)


LIVE_TAG = "kalshi_shadow/trigger"  # "live" on runs the live tick sensor launches


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    partitions_def=daily,
    kinds={"duckdb", "numpy"},
    owners=["team:quant"],
    deps=["kalshi_quotes", "kalshi_markets", "kalshi_series", "spot_vol", "spot_index", "kalshi_contracts"],
    description=("Append-only: every quote priced by every registered model (" + ", ".join(model_names()) + ") with all inputs, fees, "
                 "EVs and filter reasons, once spot, terms and fees are complete up to when the quote was seen. "
                 "Partitioned by the quote's UTC day. In the live job a run prices every newly priceable quote (of "
                 "any day); materializing a partition from the UI (a backfill) recomputes that day and gives the same rows."),
    check_specs=[
        dg.AssetCheckSpec("snapshot_id_unique", asset="kalshi_edge_snapshots", blocking=True,
                          description="No snapshot id is stored twice (checked over the quote times this run wrote)."),
        dg.AssetCheckSpec("probabilities_in_unit_interval", asset="kalshi_edge_snapshots"),
        dg.AssetCheckSpec("no_spot_from_after_the_quote", asset="kalshi_edge_snapshots",
                          description="Point in time: no snapshot uses a spot tick received after its quote was seen."),
        dg.AssetCheckSpec("snapshot_lag_p95", asset="kalshi_edge_snapshots",
                          description=f"Live runs: p95 of created_at - quote_ts under {MAX_LAG_SECONDS:g} s."),
    ],
)
def kalshi_edge_snapshots(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    live = context.run.tags.get(LIVE_TAG) == "live"
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as conn:
        run = price_new_quotes(conn, lot=lot_size()) if live else recompute_day(conn, day, lot=lot_size())
        bad_p = future_spot = 0
        p50 = p95 = None
        if run.quote_ts_range:
            params = run_params(run)
            params |= seq_range(conn, RUN_ROWS, params)
            bad_p, future_spot, p50, p95 = conn.execute("""
                SELECT count(*) FILTER (WHERE p_model < 0 OR p_model > 1 OR isnan(p_model)),
                       count(*) FILTER (WHERE spot_age_seconds < 0),
                       quantile_cont(epoch(created_at) - epoch(quote_ts), 0.5) FILTER (WHERE created_at >= now() - INTERVAL 10 MINUTE),
                       quantile_cont(epoch(created_at) - epoch(quote_ts), 0.95) FILTER (WHERE created_at >= now() - INTERVAL 10 MINUTE)
                FROM kalshi_edge_snapshots
                WHERE {RUN_ROWS} AND snapshot_seq BETWEEN $seq_lo AND $seq_hi""".format(RUN_ROWS=RUN_ROWS), params).fetchall()[0]
    if run.held_back:
        context.log.info(f"nothing priced: {run.held_back}")
    # A live run may write several days (midnight, a late file): each gets its own materialization event.
    for d in run.days:
        if d.isoformat() != context.partition_key:
            context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, partition=d.isoformat(),
                                                      metadata={"mode": "incremental", "written_by_live_run_for": context.partition_key}))
    iso = lambda t: t.isoformat() if t else None  # noqa: E731
    checks = [
        dg.AssetCheckResult(check_name="snapshot_id_unique", passed=run.duplicates == 0, metadata={"duplicates": run.duplicates}),
        dg.AssetCheckResult(check_name="probabilities_in_unit_interval", passed=bad_p == 0, metadata={"bad_rows": bad_p}),
        dg.AssetCheckResult(check_name="no_spot_from_after_the_quote", passed=future_spot == 0, metadata={"bad_rows": future_spot}),
        dg.AssetCheckResult(check_name="snapshot_lag_p95", severity=dg.AssetCheckSeverity.WARN,
                            passed=not live or p95 is None or p95 < MAX_LAG_SECONDS,
                            metadata={"p95_lag_seconds": p95, "live": live}),
    ]
    metadata = {"mode": "incremental" if live else "full recompute", "quotes": run.quotes, "rows": run.rows,
                "deleted": run.deleted, "chunks": run.chunks, "days_written": ", ".join(d.isoformat() for d in run.days),
                "pricing_frontier": iso(run.frontier), "held_back": run.held_back or "",
                **{f"frontier_{t}": iso(v) for t, v in run.inputs.items()},
                "lot_size": lot_size(), "rules_version": RULES.version}
    if p95 is not None:
        metadata.update(lag_p50_seconds=float(p50), lag_p95_seconds=float(p95))
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


kalshi_edges = dg.AssetSpec(
    "kalshi_edges", deps=["kalshi_edge_snapshots"], group_name=GROUP, kinds={"duckdb"},
    description="View: the latest snapshot per (ticker, model_version), always current with kalshi_edge_snapshots.",
)

defs = dg.Definitions(assets=[spot_index, spot_vol, kalshi_edge_snapshots, kalshi_edges])
