"""Pricing: the point-in-time vol grid, daily-partitioned edge snapshots, and the sensor that keeps them live.

Live: every `kalshi_quotes` load triggers a run for the UTC day(s) it touched, which snapshots only the new quotes.
Backfill (Dagster UI, or run config `full_recompute`): deletes the day's snapshots and recomputes them from the
warehouse tables; the rows equal what the live runs wrote (created_at aside).
"""

import os
from datetime import date, datetime, timedelta

import dagster as dg

from kalshi_shadow.defs.ingest import job_sensor_interval
from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse
from kalshi_shadow.pricing.probability import MODELS
from kalshi_shadow.pricing.rules import RULES, lot_size
from kalshi_shadow.pricing.snapshots import compute_snapshots, refresh_spot_vol

GROUP = "pricing"
# end_offset=1: the UTC day in progress is a partition too, so live runs can write it.
daily = dg.DailyPartitionsDefinition(start_date=os.environ.get("KALSHI_SHADOW_START_DATE", "2026-01-01"), timezone="UTC", end_offset=1)
MAX_LAG_SECONDS = 90.0


@dg.asset(
    group_name="ingest",  # runs in the ingest job, right after new spot ticks land
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "numpy"},
    owners=["team:quant"],
    deps=["spot_ticks"],
    description="One-minute EWMA volatility of BTC-USD (half-life 30 min, floor 20%, cap 300%), from trades at or before each grid point.",
)
def spot_vol(warehouse: Warehouse) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        added = refresh_spot_vol(conn)
        latest = conn.execute("SELECT grid_ts, vol FROM spot_vol ORDER BY grid_ts DESC LIMIT 1").fetchall()
    meta = {"rows_added": added}
    if latest:
        meta.update(latest_grid_ts=latest[0][0].isoformat(), latest_vol=float(latest[0][1]))
    return dg.MaterializeResult(metadata=meta)


class SnapshotConfig(dg.Config):
    full_recompute: bool = False  # also implied by a backfill


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    partitions_def=daily,
    kinds={"duckdb", "numpy"},
    owners=["team:quant"],
    deps=["kalshi_quotes", "kalshi_markets", "kalshi_series", "spot_vol", "spot_ticks", "kalshi_contracts"],
    description=("Append-only: every quote priced by every model (" + ", ".join(MODELS) + ") with all inputs, fees, "
                 "EVs and filter reasons. Partitioned by the quote's UTC day."),
    check_specs=[
        dg.AssetCheckSpec("probabilities_in_unit_interval", asset="kalshi_edge_snapshots"),
        dg.AssetCheckSpec("no_spot_from_after_the_quote", asset="kalshi_edge_snapshots",
                          description="Point in time: every snapshot's spot tick is at or before its quote."),
        dg.AssetCheckSpec("snapshot_lag_under_90s", asset="kalshi_edge_snapshots",
                          description="p95 of created_at - quote_ts for rows written by a live run."),
    ],
)
def kalshi_edge_snapshots(context: dg.AssetExecutionContext, config: SnapshotConfig, warehouse: Warehouse) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    full = config.full_recompute or "dagster/backfill" in context.run.tags
    started = datetime.now().astimezone()
    with warehouse.get_connection() as conn:
        run = compute_snapshots(conn, day, full=full, lot=lot_size())
        bad_p, future_spot = conn.execute("""
            SELECT count(*) FILTER (WHERE p_model < 0 OR p_model > 1 OR isnan(p_model)),
                   count(*) FILTER (WHERE spot_ts > quote_ts)
            FROM kalshi_edge_snapshots WHERE quote_date = ?""", [day]).fetchall()[0]
        lag = conn.execute("""
            SELECT quantile_cont(epoch(created_at) - epoch(quote_ts), 0.95)
            FROM kalshi_edge_snapshots WHERE quote_date = ? AND created_at >= ?""", [day, started]).fetchall()[0][0]
        tradable = conn.execute("SELECT count(*) FROM kalshi_edge_snapshots WHERE quote_date = ? AND len(reasons) = 0", [day]).fetchall()[0][0]
    checks = [
        dg.AssetCheckResult(check_name="probabilities_in_unit_interval", passed=bad_p == 0, metadata={"bad_rows": bad_p}),
        dg.AssetCheckResult(check_name="no_spot_from_after_the_quote", passed=future_spot == 0, metadata={"bad_rows": future_spot}),
        dg.AssetCheckResult(check_name="snapshot_lag_under_90s", severity=dg.AssetCheckSeverity.WARN,
                            passed=full or lag is None or lag < MAX_LAG_SECONDS,
                            metadata={"p95_lag_seconds": lag, "backfill": full}),
    ]
    return dg.MaterializeResult(
        metadata={"mode": "full recompute" if full else "incremental", "quotes": run.quotes, "rows": run.rows,
                  "deleted": run.deleted, "tradable_rows_in_day": tradable, "lot_size": lot_size(),
                  "rules_version": RULES.version,
                  "spot_watermark": run.spot_watermark.isoformat() if run.spot_watermark else None},
        check_results=checks,
    )


kalshi_edges = dg.AssetSpec(
    "kalshi_edges", deps=["kalshi_edge_snapshots"], group_name=GROUP, kinds={"duckdb"},
    description="View: the latest snapshot per (ticker, model_version), always current with kalshi_edge_snapshots.",
)

pricing_job = dg.define_asset_job("pricing_job", selection=dg.AssetSelection.assets("kalshi_edge_snapshots"))


def _days(min_ts: str | None, max_ts: str | None) -> list[str]:
    if not min_ts or not max_ts:
        return []
    lo, hi = datetime.fromisoformat(min_ts).date(), datetime.fromisoformat(max_ts).date()
    return [(lo + timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]


@dg.asset_sensor(asset_key=dg.AssetKey("kalshi_quotes"), job=pricing_job, name="quotes_to_snapshots_sensor",
                 minimum_interval_seconds=job_sensor_interval() // 2 or 1,
                 default_status=dg.DefaultSensorStatus.RUNNING,
                 description="After each quotes load, snapshots the UTC day(s) the new quotes fall in.")
def quotes_to_snapshots_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    md = asset_event.dagster_event.event_specific_data.materialization.metadata
    days = _days(md["min_ts"].value if "min_ts" in md else None, md["max_ts"].value if "max_ts" in md else None)
    if not days:
        return dg.SkipReason("the last quotes load brought no rows")
    return [dg.RunRequest(run_key=f"{asset_event.run_id}:{d}", partition_key=d) for d in days]


defs = dg.Definitions(assets=[spot_vol, kalshi_edge_snapshots, kalshi_edges], jobs=[pricing_job], sensors=[quotes_to_snapshots_sensor])
