"""Would-trade decisions: each rule set of the rules file decides on every new snapshot, in the live job after
snapshots, carrying its positions, caps, cool-downs and cash across runs and days (`decisions/engine.py`, state in
`decisions/state.py`).

**Replays are off the live path.** A new or edited rule set (a new version), or `rerun_from: YYYY-MM-DD` in the
launchpad, must replay history. The live run does not do that: it registers the version as replaying and goes on
with the others, so their decisions stay on time. `decision_replay_job` replays in bounded slices (a few seconds of
work per run, holding the warehouse only that long), launched by `decision_replay_sensor` until the version has
caught up; then the live runs take it on. Progress shows in each materialization's metadata, in the run list, and
in `kalshi-shadow status`.
"""

import json
import time as clock
from datetime import datetime, time, timezone

import dagster as dg

from kalshi_shadow.config import env_number
from kalshi_shadow.decisions import state
from kalshi_shadow.decisions.engine import CHUNK, cash_mismatches, decide, ensure_state, rerun_from, settle
from kalshi_shadow.decisions.rulesets import load_rule_sets
from kalshi_shadow.defs.inline import active_runs
from kalshi_shadow.defs.pricing import LIVE_TAG
from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse

GROUP = "decisions"
ASSET = "kalshi_would_trades"


def replay_budget_seconds() -> float:
    """Work per replay run (`KALSHI_SHADOW_REPLAY_BUDGET_SECONDS`, 8): the warehouse is held that long, so a live
    run waits at most about that much behind a replay."""
    return env_number("KALSHI_SHADOW_REPLAY_BUDGET_SECONDS", 8, minimum=0)


class DecisionConfig(dg.Config):
    rerun_from: str = ""                                  # YYYY-MM-DD: replay decisions from this UTC day on
    rule_sets: list[str] = []                             # names to run (default: every set in the rules file)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    owners=["team:quant"],
    deps=["kalshi_edge_snapshots", "kalshi_settlements"],
    description=("Append-only decision log: for every rule set of KALSHI_SHADOW_RULES, a take (side, contracts by "
                 "fractional Kelly within every cap, fee, bankroll before) or a skip with its reason, logged when a "
                 "contract's reason changes. Settlement fills in realised PnL net of the per-order fee. In the live "
                 "job: the sets on the live path. Otherwise (decision_replay_job, or from the launchpad with "
                 "rerun_from): a bounded slice of replay. Never sends anything."),
    check_specs=[
        dg.AssetCheckSpec("takes_within_limits", asset=ASSET,
                          description="No take written by this run exceeds the ask size or costs more than the cash it had."),
        dg.AssetCheckSpec("decisions_keep_up_with_snapshots", asset=ASSET,
                          description="Every rule set on the live path has decided up to the decision target."),
        dg.AssetCheckSpec("state_matches_positions", asset=ASSET,
                          description="Each version's stored cash equals what its positions imply at its frontier."),
    ],
)
def kalshi_would_trades(context: dg.AssetExecutionContext, config: DecisionConfig, warehouse: Warehouse) -> dg.MaterializeResult:
    live = context.run.tags.get(LIVE_TAG) == "live"
    sets = [rs for rs in load_rule_sets() if not config.rule_sets or rs.name in config.rule_sets]
    meta: dict[str, object] = {"mode": "live" if live else "replay"}
    bad = 0
    deadline = clock.monotonic() + replay_budget_seconds()  # shared by the versions replaying
    with warehouse.get_connection() as conn:
        if config.rerun_from and not live:
            start = datetime.combine(datetime.fromisoformat(config.rerun_from).date(), time(0), tzinfo=timezone.utc)
            for rs in sets:
                context.log.info(f"{rs.version}: {rerun_from(conn, rs, start)} rows after {start.date()} removed; replaying")
        if not config.rule_sets:  # the whole rules file: what it holds is what is deciding
            state.mark_rules_file(conn, [rs.version for rs in sets])
        target = state.target(conn)
        for rs in sets:
            st = ensure_state(conn, rs)
            if live and not st.replaying and st.frontier is not None and target is not None and target - st.frontier > CHUNK:
                # Far behind (the platform was down, or the set came back into the rules file): a live run decides
                # at most a chunk, so the rest goes to the replay job too.
                st.replaying, st.replay_from, st.replay_started_at = True, st.frontier, datetime.now(timezone.utc)
                state.save(conn, st)
                context.log.warning(f"{rs.version}: {(target - st.frontier).total_seconds() / 3600:.1f} h behind; replayed off the live path")
            if st.replaying == live:  # the live run leaves replays to decision_replay_job, and a replay leaves live sets
                continue
            run = decide(conn, rs) if live else decide(conn, rs, budget_seconds=max(0.0, deadline - clock.monotonic()))
            bad += run.bad_takes
            meta[f"{rs.name}: takes this run"] = run.takes
            meta[f"{rs.name}: skips logged this run"] = run.skips_logged
            if run.reasons:
                context.log.info(f"{rs.version}: {run.takes} takes; skips by reason: {dict(run.reasons.most_common())}")
            if not live:
                context.log.info(f"{rs.version}: replayed {run.chunks} chunk(s) to {_iso(run.frontier)}"
                                 + (" and caught up" if run.caught_up else ""))
        meta["takes settled"] = settle(conn)
        versions = {rs.version for rs in sets}
        states = [s for s in state.load_all(conn) if s.version in versions]
        behind = sum(1 for s in states if not s.replaying and (s.frontier is None or (target and s.frontier < target)))
        mismatched = cash_mismatches(conn)
        counts = {v: (n, o) for v, n, o in conn.execute("""
            SELECT rule_set_version, count(*), count(*) FILTER (WHERE known_ts IS NULL)
            FROM kalshi_decision_positions GROUP BY 1""").fetchall()}
    replaying = [s.version for s in states if s.replaying]
    meta["replaying"] = dg.MetadataValue.json(replaying)  # read by decision_replay_sensor
    meta["decision_target"] = _iso(target)
    meta["rule sets"] = dg.MetadataValue.md(
        "| version | frontier | replay | takes | open | cash | open exposure |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(f"| {s.version} | {_iso(s.frontier) or '-'} | "
                    + (f"{100 * (s.progress(target) or 0):.0f}% from {_iso(s.replay_from) or 'the start'}" if s.replaying else "live")
                    + f" | {counts.get(s.version, (0, 0))[0]} | {counts.get(s.version, (0, 0))[1]} | {s.cash:.2f} | {s.exposure:.2f} |"
                    for s in states))
    for s in states:
        if s.replaying:
            meta[f"{s.rule_set}: replay progress"] = float(round(s.progress(target) or 0, 4))
    return dg.MaterializeResult(metadata=meta, check_results=[
        dg.AssetCheckResult(check_name="takes_within_limits", passed=bad == 0, metadata={"bad_takes": bad}),
        dg.AssetCheckResult(check_name="decisions_keep_up_with_snapshots", passed=behind == 0,
                            severity=dg.AssetCheckSeverity.WARN, metadata={"rule_sets_behind": behind,
                                                                           "rule_sets_replaying": len(replaying)}),
        dg.AssetCheckResult(check_name="state_matches_positions", passed=not mismatched,
                            metadata={"versions_off": json.dumps({k: round(v, 6) for k, v in mismatched.items()})}),
    ])


REPLAY_TAG = "kalshi_shadow/decisions"
decision_replay_job = dg.define_asset_job(
    "decision_replay_job", selection=dg.AssetSelection.assets(ASSET), tags={REPLAY_TAG: "replay"},
    description="A bounded slice of decision replay for new or edited rule sets (and rerun_from); launched by "
                "decision_replay_sensor until every version has caught up.")

@dg.sensor(name="decision_replay_sensor", job=decision_replay_job, minimum_interval_seconds=10,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches the next replay slice while the latest decisions materialization lists a replaying "
                       "rule set version (reads Dagster's event log only, never the warehouse).")
def decision_replay_sensor(context: dg.SensorEvaluationContext):
    event = context.instance.get_latest_materialization_event(dg.AssetKey(ASSET))
    mat = event.asset_materialization if event else None
    replaying = mat.metadata["replaying"].value if mat and "replaying" in mat.metadata else []
    if not replaying:
        return dg.SkipReason("no rule set version is replaying")
    if active_runs(context.instance, decision_replay_job.name):
        return dg.SkipReason("a replay slice is still running")
    return dg.RunRequest(run_key=f"replay:{event.run_id}", tags={REPLAY_TAG: "replay"})


open_positions = dg.AssetSpec("kalshi_open_positions", deps=[ASSET], group_name=GROUP, kinds={"duckdb"},
                              description="View: takes not yet settled, per rule set version.")
bankroll = dg.AssetSpec("kalshi_bankroll", deps=[ASSET], group_name=GROUP, kinds={"duckdb"},
                        description="View: each rule set version's cash, open exposure and equity at cost, at every take and payout.")

defs = dg.Definitions(assets=[kalshi_would_trades, open_positions, bankroll], jobs=[decision_replay_job],
                      sensors=[decision_replay_sensor])
