"""Daily and weekly evaluation reports: coverage, calibration on paired rows, edge quality, would-trade PnL, drift.

Each materialization reads the warehouse in one short connection (event-level aggregates), then draws and writes
`<data_dir>/reports/daily/YYYY-MM-DD/index.html` (weekly: `reports/weekly/YYYY-Www/`) with its PNGs beside it,
and shows the headline tables and charts as the asset's metadata. Scheduled after settlement: the daily report at
02:00 UTC for yesterday, the weekly on Monday at 03:00 UTC for last week; backfill any partition from the UI.
"""


import os
from datetime import timedelta
from pathlib import Path

import dagster as dg

from kalshi_shadow.defs.pricing import daily
from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse
from kalshi_shadow.reports.data import Period, collect, duckdb_query

GROUP = "reports"
# ISO weeks: Monday to Monday, UTC.
weekly = dg.WeeklyPartitionsDefinition(start_date=os.environ.get("KALSHI_SHADOW_START_DATE", "2026-01-01"), timezone="UTC",
                                       day_offset=1)


def _materialize(period: Period, warehouse: Warehouse) -> dg.MaterializeResult:
    # Imported here: matplotlib costs a quarter second of CPU, and every run process (a live tick every 30 s)
    # imports this code location.
    from kalshi_shadow.reports.build import build, metadata_markdown, report_dir, write_html

    with warehouse.get_connection() as conn:
        data = collect(duckdb_query(conn), period)
    report = build(data)  # charts and HTML without the warehouse held
    path = write_html(report, report_dir(Path(warehouse.raw_dir).parent, period))
    empty = [s.title for s in report.sections if s.status]
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(metadata_markdown(report)),
        "path": dg.MetadataValue.path(str(path)),
        "sections_without_figures": len(empty),
    })


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, partitions_def=daily, kinds={"duckdb", "html"}, owners=["team:quant"],
          deps=["kalshi_edge_snapshot_scores", "kalshi_would_trades"],
          description="Daily evaluation report (HTML + PNG under data/reports/daily/YYYY-MM-DD/): coverage, Brier and log "
                      "loss of each model and the mid on paired rows with event-bootstrap skill intervals, reliability, "
                      "Brier decomposition, edge quality, would-trade PnL per rule set, drift.")
def kalshi_daily_report(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    return _materialize(Period.day(context.partition_key), warehouse)


@dg.asset(group_name=GROUP, pool=WAREHOUSE_POOL, partitions_def=weekly, kinds={"duckdb", "html"}, owners=["team:quant"],
          deps=["kalshi_edge_snapshot_scores", "kalshi_would_trades"],
          description="Weekly evaluation report (data/reports/weekly/YYYY-Www/): the daily sections over the ISO week, "
                      "each day's headline figures and the trend over the weeks available.")
def kalshi_weekly_report(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    return _materialize(Period.week(context.partition_key), warehouse)


daily_report_job = dg.define_asset_job("daily_report_job", selection=[kalshi_daily_report])
weekly_report_job = dg.define_asset_job("weekly_report_job", selection=[kalshi_weekly_report])


@dg.schedule(job=daily_report_job, cron_schedule="0 2 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Yesterday's report, two hours after its last hourly contracts close.")
def daily_report_schedule(context: dg.ScheduleEvaluationContext):
    day = (context.scheduled_execution_time.date() - timedelta(days=1)).isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


@dg.schedule(job=weekly_report_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING, description="Last ISO week's report, Monday 03:00 UTC.")
def weekly_report_schedule(context: dg.ScheduleEvaluationContext):
    monday = (context.scheduled_execution_time.date() - timedelta(days=7)).isoformat()
    return dg.RunRequest(run_key=monday, partition_key=monday)


defs = dg.Definitions(assets=[kalshi_daily_report, kalshi_weekly_report], jobs=[daily_report_job, weekly_report_job],
                      schedules=[daily_report_schedule, weekly_report_schedule])
