"""Would-trade decisions: each rule set of the rules file decides on every new snapshot, in the live job after
snapshots, carrying its positions, caps, cool-downs and cash across runs and days (`decisions/engine.py`).

A new rule set version (an edited set) replays the warehouse's history on its first run; the log of every other
version stays. To re-evaluate from a day on, materialize with `rerun_from: YYYY-MM-DD` in the launchpad: that
version's rows from the day on are replayed and come out the same unless the inputs changed.
"""


from datetime import datetime, time, timezone

import dagster as dg

from kalshi_shadow.decisions.engine import decide, rerun_from, seconds_behind, settle
from kalshi_shadow.decisions.rulesets import load_rule_sets
from kalshi_shadow.defs.resources import WAREHOUSE_POOL, Warehouse

GROUP = "decisions"


class DecisionConfig(dg.Config):
    rerun_from: str = ""                                  # YYYY-MM-DD: replay decisions from this UTC day on
    rule_sets: list[str] = []                             # names to run (default: every set in the rules file)


@dg.asset(
    group_name=GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    owners=["team:quant"],
    deps=["kalshi_edge_snapshots", "kalshi_settlements"],
    description=("Append-only decision log: for every rule set of KALSHI_SHADOW_RULES, a take (side, contracts by "
                 "fractional Kelly within every cap, fee, bankroll before) or a skip with its reason, logged when a "
                 "contract's reason changes. Settlement fills in realised PnL net of the per-order fee. Never sends anything."),
    check_specs=[
        dg.AssetCheckSpec("takes_within_limits", asset="kalshi_would_trades",
                          description="No take exceeds the ask size or costs more than the cash it had."),
        dg.AssetCheckSpec("decisions_keep_up_with_snapshots", asset="kalshi_would_trades",
                          description="Every rule set has decided up to the pricing frontier."),
    ],
)
def kalshi_would_trades(context: dg.AssetExecutionContext, config: DecisionConfig, warehouse: Warehouse) -> dg.MaterializeResult:
    sets = [rs for rs in load_rule_sets() if not config.rule_sets or rs.name in config.rule_sets]
    meta: dict[str, object] = {}
    with warehouse.get_connection() as conn:
        if config.rerun_from:
            start = datetime.combine(datetime.fromisoformat(config.rerun_from).date(), time(0), tzinfo=timezone.utc)
            for rs in sets:
                context.log.info(f"{rs.version}: {rerun_from(conn, rs, start)} rows from {start.date()} on removed, replaying")
        for rs in sets:
            run = decide(conn, rs)
            meta[f"{rs.name}: takes this run"] = run.takes
            meta[f"{rs.name}: skips logged this run"] = run.skips_logged
            if run.reasons:
                context.log.info(f"{rs.version}: {run.takes} takes; skips by reason: {dict(run.reasons.most_common())}")
        meta["takes settled"] = settle(conn)
        bad = conn.execute("""SELECT count(*) FROM kalshi_would_trades WHERE action = 'take'
                              AND (contracts > ask_size OR cost > bankroll_before + 1e-9 OR contracts <= 0)""").fetchall()[0][0]
        behind = sum(1 for lag in seconds_behind(conn, [rs.version for rs in sets]).values() if lag > 0)
        table = conn.execute("""
            SELECT rule_set_version, count(*) FILTER (WHERE action = 'take') AS takes,
                   count(*) FILTER (WHERE action = 'take' AND outcome IS NULL) AS open,
                   round(sum(realised_pnl), 2) AS realised_pnl,
                   round(arg_max(bankroll_before, decided_ts), 2) AS last_bankroll
            FROM kalshi_would_trades WHERE rule_set_version IN (SELECT unnest($versions::VARCHAR[])) GROUP BY 1 ORDER BY 1
        """, {"versions": [rs.version for rs in sets]}).fetchall()
    meta["rule sets"] = dg.MetadataValue.md(
        "| version | takes | open | realised PnL | bankroll |\n|---|---|---|---|---|\n"
        + "\n".join(f"| {v} | {t} | {o} | {p} | {b} |" for v, t, o, p, b in table))
    return dg.MaterializeResult(metadata=meta, check_results=[
        dg.AssetCheckResult(check_name="takes_within_limits", passed=bad == 0, metadata={"bad_takes": bad}),
        dg.AssetCheckResult(check_name="decisions_keep_up_with_snapshots", passed=behind == 0,
                            severity=dg.AssetCheckSeverity.WARN, metadata={"rule_sets_behind": behind}),
    ])


open_positions = dg.AssetSpec("kalshi_open_positions", deps=["kalshi_would_trades"], group_name=GROUP, kinds={"duckdb"},
                              description="View: takes not yet settled, per rule set version.")
bankroll = dg.AssetSpec("kalshi_bankroll", deps=["kalshi_would_trades"], group_name=GROUP, kinds={"duckdb"},
                        description="View: each rule set version's cash, open exposure and equity at cost, at every take and payout.")

defs = dg.Definitions(assets=[kalshi_would_trades, open_positions, bankroll])
