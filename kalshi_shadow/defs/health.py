"""Health checks on a schedule: collector liveness, freshness, gaps, coverage, sanity and error rates
(`monitoring/health.py`), as Dagster asset checks so the UI shows them and the alert sensor sees them.

They hang on one asset of their own, `platform_health`, downstream of everything they watch: Dagster shows a
check's latest result against the latest materialization of its asset, so a check on `spot_ticks` (materialized
every 30 s by the live job) would read "not evaluated" a moment after every run. Each result names the table it is
about in its metadata.

A check-only job (no materialization) every `KALSHI_SHADOW_HEALTH_MINUTES` (5): when the
feeds die nothing loads, so checks that run only inside loads would never fail.
"""

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from kalshi_shadow.config import env_number
from kalshi_shadow.alerts import deliver
from kalshi_shadow.alerts import journal
from kalshi_shadow.defs.alerts import AlertDestinations
from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse
from kalshi_shadow.monitoring.digest import compose
from kalshi_shadow.monitoring.health import ERROR, NOT_ASSETS, SPECS, evaluate


class HealthConfig(dg.Config):
    collector_silent_seconds: float = 0.0  # 0: KALSHI_SHADOW_COLLECTOR_SILENT_SECONDS (120)


platform_health_asset = dg.AssetSpec(
    "platform_health", group_name="monitoring", kinds={"duckdb"}, owners=["team:data-platform"],
    deps=sorted({asset for asset, _, _ in SPECS} - set(NOT_ASSETS)),
    description="The live platform as a whole: its health checks run every few minutes (health_job), whether or not "
                "data arrives. Nothing is materialized here; see the Checks tab.")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset="platform_health", description=f"{asset}: {desc}") for asset, name, desc in SPECS],
    name="platform_health", pool=WAREHOUSE_POOL, can_subset=True,
    description="Liveness, freshness, gaps, coverage, sanity and error rates of the live platform.",
)
def platform_health(context: dg.AssetCheckExecutionContext, config: HealthConfig,
                    warehouse: Warehouse) -> Iterator[dg.AssetCheckResult]:
    with warehouse.get_connection() as conn:
        findings = evaluate(conn, Path(warehouse.raw_dir).parent, silent_seconds=config.collector_silent_seconds or None)
    selected = {k.name for k in context.selected_asset_check_keys}
    for f in findings:
        if f.check not in selected:  # one check can be run alone from the UI
            continue
        if not f.passed:
            context.log.warning(f"{f.asset}.{f.check} failed ({f.severity}): {f.description or f.metadata}")
        yield dg.AssetCheckResult(
            asset_key="platform_health", check_name=f.check, passed=f.passed, description=f.description or None,
            severity=dg.AssetCheckSeverity.ERROR if f.severity == ERROR else dg.AssetCheckSeverity.WARN,
            metadata={"about": f.asset, **{k: v for k, v in f.metadata.items() if v is not None}})


health_job = dg.define_asset_job(
    "health_job", selection=dg.AssetSelection.checks(platform_health),
    description="Evaluates the platform's health checks (no materialization).")


def health_minutes() -> int:
    """Every 5 minutes by default, also with --fast-clock (markets are shorter, the feeds are not): each run is a
    process of a few CPU-seconds."""
    return env_number("KALSHI_SHADOW_HEALTH_MINUTES", 5, minimum=1, integer=True)


health_schedule = dg.ScheduleDefinition(
    name="health_schedule", job=health_job, cron_schedule=f"*/{health_minutes()} * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING, execution_timezone="UTC",
    description="Health checks every few minutes, whether or not data arrives.")


@dg.asset(
    group_name="monitoring", pool=WAREHOUSE_POOL, kinds={"duckdb"}, owners=["team:data-platform"],
    deps=["spot_ticks", "kalshi_quotes", "collector_events", "kalshi_would_trades", "kalshi_settlements"],
    description="The daily health digest of the last 24 h (failed checks, gap hours, restarts, collector errors, the "
                "last settlement read, decisions), sent through the alert channel and kept in alerts.jsonl.")
def kalshi_health_digest(context: dg.AssetExecutionContext, warehouse: Warehouse, alerting: AlertDestinations) -> dg.MaterializeResult:
    settings = alerting.settings()
    data_dir = Path(warehouse.raw_dir).parent
    with warehouse.get_connection() as conn:
        title, body, figures = compose(conn, data_dir, datetime.now(timezone.utc))
    delivery = deliver(settings.urls, title, body, "INFO", attempts=settings.attempts, backoff_seconds=settings.backoff_seconds)
    journal.append(settings.journal_path, {"key": "digest", "kind": "digest", "severity": "INFO", "title": title,
                                           "message": body, "delivery": delivery.as_dict()})
    if delivery.ok is False:
        context.log.error(f"digest not delivered after {delivery.attempts} attempt(s): {delivery.error}")
    return dg.MaterializeResult(metadata={**figures, "delivered": str(delivery.ok), "digest": dg.MetadataValue.md(
        "**" + title + "**\n\n```\n" + body + "\n```")})


digest_job = dg.define_asset_job("digest_job", selection=dg.AssetSelection.assets(kalshi_health_digest),
                                 description="The daily health digest.")
digest_schedule = dg.ScheduleDefinition(
    name="digest_schedule", job=digest_job, cron_schedule="0 6 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, description="The daily health digest at 06:00 UTC.")

defs = dg.Definitions(assets=[platform_health_asset, kalshi_health_digest], asset_checks=[platform_health], jobs=[health_job, digest_job],
                      schedules=[health_schedule, digest_schedule])
