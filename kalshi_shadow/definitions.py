"""The Dagster code location (workspace.yaml points here): every domain module's definitions, merged."""

from __future__ import annotations

import dagster as dg

from kalshi_shadow.defs import resources as resources_mod

DOMAIN_MODULES = [
    "kalshi_shadow.defs.ingest",  # raw loads, contracts, sensors, checks, alerts (data plane)
    "kalshi_shadow.defs.pricing",  # volatility, edge snapshots, kalshi_edges (pricing)
    "kalshi_shadow.defs.live",  # the live job: one micro-batch per tick, loads then derived tables
    "kalshi_shadow.defs.settlements",  # settlements from the exchange, snapshot scores
    "kalshi_shadow.defs.decisions",  # would-trade decisions of every rule set, realised PnL
    "kalshi_shadow.defs.reports",  # daily and weekly evaluation reports (HTML + PNG, metadata), after settlement
    "kalshi_shadow.defs.health",  # scheduled health checks: liveness, freshness, gaps, sanity, error rates
    "kalshi_shadow.defs.housekeeping",  # hourly pruning of old Dagster runs, event and compute logs
    "kalshi_shadow.defs.alerts",  # failed/recovered checks and failed runs -> Apprise URLs + data/alerts.jsonl
]


def build_definitions() -> dg.Definitions:
    import importlib

    parts = [importlib.import_module(m).defs for m in DOMAIN_MODULES]
    # Every job runs its steps in the run's own process: the steps that write DuckDB are serialised by its pool
    # anyway, and a process per step costs a Python start and the code location's import each time.
    return dg.Definitions.merge(*parts, dg.Definitions(resources=resources_mod.resources(), executor=dg.in_process_executor))


defs = build_definitions()
