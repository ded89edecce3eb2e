"""Settlements from the exchange and snapshot scores.

`kalshi_settlements` runs from `settlements_sensor` (every minute with the simulator's fast clock, else every 5): it reads
the closed contracts still lacking a final outcome, asks the exchange for exactly those tickers (with no DuckDB
connection open), then writes outcomes and the observation history in one short transaction. A sensor then
evaluates the snapshot days of contracts whose outcome is new or changed. Evaluate any day of scores in the UI;
set `since_seconds` in the launchpad to re-read every contract closed in that window. Scores are a view (always
current); the scores asset evaluates a day.

A ticker whose reads bring nothing new backs off, and past KALSHI_SHADOW_SETTLEMENT_GIVE_UP_HOURS (default 48)
after close is flagged in kalshi_settlement_reads and no longer read; the `no_settlement_reads_given_up` check
warns while any ticker is flagged. A `since_seconds` re-read also reads flagged tickers of its window.
"""

import json
import os
import time
from datetime import date

import dagster as dg

from kalshi_shadow.defs.inline import INLINE_TAG, active_runs, run_inline, why_not_inline
from kalshi_shadow.defs.pricing import daily
from kalshi_shadow.defs.resources import WAREHOUSE_POOL, KalshiAPI, Warehouse
from kalshi_shadow.scoring.scores import score_day
from kalshi_shadow.scoring.settlements import (STREAM_DISAGREES_SQL, Skip, apply_observations, fetch_outcomes, mark_streamed,
                                               plan_reads, quote_dates_of, streamed_observations, track_reads, utcnow)

GROUP = "scoring"


class SettlementConfig(dg.Config):
    since_seconds: int | None = None  # also re-read contracts closed this long ago, even if final, backing off or flagged


@dg.asset(
    group_name=GROUP, pool=WAREHOUSE_POOL, kinds={"duckdb"}, owners=["team:quant"], deps=["kalshi_contracts", "kalshi_lifecycle"],
    description="Outcomes (result, settlement value, expiration value, settlement time) from the exchange for each "
                "closed contract's own ticker into kalshi_contracts (streamed lifecycle events when keyed, REST reads always), plus every observation in kalshi_settlement_observations "
                "and each ticker's read state (backoff, given-up flag) in kalshi_settlement_reads.",
    check_specs=[dg.AssetCheckSpec("final_contracts_have_outcomes", asset="kalshi_settlements",
                                   description="No contract the exchange calls finalized lacks an outcome."),
                 dg.AssetCheckSpec("streamed_outcomes_match_reads", asset="kalshi_settlements",
                                   description="Every outcome from the lifecycle stream (keyed) agrees with the REST reads after it."),
                 dg.AssetCheckSpec("no_settlement_reads_given_up", asset="kalshi_settlements",
                                   description="No ticker was given up on (unknown to the exchange, or never finalized "
                                               "within the bound); see kalshi_settlement_reads WHERE flag IS NOT NULL.")],
)
def kalshi_settlements(context: dg.AssetExecutionContext, config: SettlementConfig, warehouse: Warehouse,
                       kalshi: KalshiAPI) -> dg.MaterializeResult:
    now = utcnow()
    with warehouse.get_connection() as conn:
        todo, skipped = plan_reads(conn, now, config.since_seconds)
    _log_skips(context, skipped)
    with kalshi.client() as client:  # no warehouse lock held during HTTP
        observations = fetch_outcomes(client, todo)
    missing = sorted(set(todo) - {o.ticker for o in observations})
    if missing:
        context.log.warning(f"{len(missing)} closed tickers not returned by the exchange, e.g. {missing[:3]}; read again with backoff")
    with warehouse.get_connection() as conn:
        recorded = utcnow()  # taken holding the warehouse: no decision made before this moment could have seen them
        streamed, through = streamed_observations(conn)
        changed = apply_observations(conn, streamed, recorded)  # the stream's first, then the reads (newest wins)
        if through is not None:
            mark_streamed(conn, through)
        changed = sorted(set(changed) | set(apply_observations(conn, observations, recorded)))
        disagreeing = conn.execute(STREAM_DISAGREES_SQL).fetchall()[0][0]
        flagged_now = track_reads(conn, todo, observations, recorded)
        days = quote_dates_of(conn, changed)
        final_without = conn.execute("""SELECT count(*) FROM kalshi_contracts
                                        WHERE settlement_status = 'finalized' AND outcome IS NULL""").fetchall()[0][0]
        by_outcome = dict(conn.execute("SELECT coalesce(outcome, 'pending'), count(*) FROM kalshi_contracts "
                                       "WHERE close_ts <= ? AND close_ts > ? - INTERVAL 1 DAY GROUP BY 1", [recorded, recorded]).fetchall())
        flags = dict(conn.execute("SELECT flag, count(*) FROM kalshi_settlement_reads WHERE flag IS NOT NULL GROUP BY 1").fetchall())
    for s in flagged_now:
        context.log.warning(f"{s.ticker}: given up ({s.flag}) after {s.reads} reads: {s.flag_reason}")
    return dg.MaterializeResult(
        metadata={"checked": len(todo), "observed": len(observations), "streamed": len(streamed), "changed": len(changed),
                  "changed_tickers": json.dumps(changed[:50]), "quote_dates": json.dumps(days),
                  "closed_last_day_by_outcome": json.dumps(by_outcome), "unknown_tickers": len(missing),
                  "skipped": len(skipped), "flagged_now": len(flagged_now)},
        check_results=[dg.AssetCheckResult(check_name="final_contracts_have_outcomes", passed=final_without == 0,
                                           metadata={"finalized_without_outcome": final_without}),
                       dg.AssetCheckResult(check_name="no_settlement_reads_given_up", passed=not flags,
                                           severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"flagged_tickers": sum(flags.values()), "by_flag": json.dumps(flags)}),
                       dg.AssetCheckResult(check_name="streamed_outcomes_match_reads", passed=disagreeing == 0,
                                           metadata={"contracts_disagreeing_7d": disagreeing})],
    )


def _log_skips(context: dg.AssetExecutionContext, skipped: list[Skip]) -> None:
    """Why each unresolved ticker is not read this run: backing off (one line each), or given up (one line in all:
    each flag's reason was logged when it was set and stays in kalshi_settlement_reads)."""
    flagged = [s for s in skipped if s.flag]
    for s in skipped:
        if not s.flag:
            context.log.info(f"{s.ticker}: not read, {s.reason}")
    if flagged:
        context.log.info(f"{len(flagged)} given-up tickers not read (kalshi_settlement_reads WHERE flag IS NOT NULL), "
                         f"e.g. {flagged[0].ticker}, {flagged[0].flag}: {flagged[0].reason}")


@dg.asset(
    group_name=GROUP, pool=WAREHOUSE_POOL, partitions_def=daily, kinds={"duckdb"}, owners=["team:quant"],
    deps=["kalshi_edge_snapshots", "kalshi_settlements"],
    description="View: per snapshot of a settled contract, Brier and log loss of the model and of the market mid, "
                "PnL per contract of taking YES / NO at the ask net of fees, beside the predicted EV; void excluded with "
                "a reason. Derived when read, so always current; a partition run evaluates that UTC day (figures, checks).",
    check_specs=[dg.AssetCheckSpec("scores_in_range", asset="kalshi_edge_snapshot_scores",
                                   description="Brier in [0, 1], log loss >= 0, PnL per contract within $1.")],
)
def kalshi_edge_snapshot_scores(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as conn:
        figures = score_day(conn, day)
    return dg.MaterializeResult(
        metadata={k: v for k, v in figures.items() if v is not None},
        check_results=[dg.AssetCheckResult(check_name="scores_in_range", passed=figures["out_of_range"] == 0,
                                           metadata={"bad_rows": figures["out_of_range"]})],
    )


settlements_job = dg.define_asset_job("settlements_job", selection=dg.AssetSelection.assets("kalshi_settlements"))
scores_job = dg.define_asset_job("scores_job", selection=dg.AssetSelection.assets("kalshi_edge_snapshot_scores"))

def settlement_read_seconds() -> int:
    """Every 5 minutes; every minute on the fast clock (15-minute markets close every 2 minutes there)."""
    return 60 if os.environ.get("KALSHI_SHADOW_FAST_CLOCK") else 300


@dg.sensor(name="settlements_sensor", job=settlements_job, minimum_interval_seconds=settlement_read_seconds(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reads outcomes of closed contracts from the exchange: every 5 min (1 min on the fast clock), "
                       "executed by the sensor itself when the warehouse is free, else requested (queued).")
def settlements_sensor(context: dg.SensorEvaluationContext):
    active = active_runs(context.instance, settlements_job.name)
    if active:
        return dg.SkipReason(f"settlements run {active[0].run_id[:8]} is still going")
    why_queued = why_not_inline(context.instance)
    if why_queued is None:
        ran = run_inline(context.instance, settlements_job.name, sensor="settlements_sensor", tags={})
        return dg.SkipReason(f"nothing to launch: {ran}")
    context.log.info(f"settlements run requested (queued): {why_queued}")
    return dg.RunRequest(run_key=f"settlements:{int(time.time())}", tags={INLINE_TAG: "no"})


@dg.asset_sensor(asset_key=dg.AssetKey("kalshi_settlements"), job=scores_job, name="settlements_to_scores_sensor",
                 default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15,
                 description="Scores the snapshot days of contracts whose outcome is new or changed (executed by the "
                             "sensor itself when the warehouse is free, else requested).")
def settlements_to_scores_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    md = asset_event.dagster_event.event_specific_data.materialization.metadata
    days = json.loads(md["quote_dates"].value) if "quote_dates" in md else []
    if not days:
        return dg.SkipReason("no outcome changed")
    if why_not_inline(context.instance) is None:
        ran = [run_inline(context.instance, scores_job.name, sensor="settlements_to_scores_sensor", tags={}, partition_key=d)
               for d in days]
        return dg.SkipReason(f"nothing to launch: {'; '.join(ran)}")
    return [dg.RunRequest(run_key=f"{asset_event.run_id}:{d}", partition_key=d, tags={INLINE_TAG: "no"}) for d in days]


defs = dg.Definitions(assets=[kalshi_settlements, kalshi_edge_snapshot_scores], jobs=[settlements_job, scores_job],
                      sensors=[settlements_sensor, settlements_to_scores_sensor])
