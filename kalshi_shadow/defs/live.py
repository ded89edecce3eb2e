"""The live path: one run per tick loads every new raw file, then derives everything live from it, in order.

One run on the in-process executor (one process, no per-step subprocesses) does, in dependency order: the raw
loads, `kalshi_contracts`, `spot_index`, `spot_vol`, `kalshi_edge_snapshots`, then `kalshi_would_trades`. Pricing therefore
never races loading, the snapshots step prices only quotes whose inputs are complete (see `pricing/snapshots.py`),
and decisions follow the snapshots up to the same frontier (see `decisions/engine.py`).

`live_tick_sensor` looks at the raw folder only (never DuckDB; each writer's file numbers, never the clock) every
`KALSHI_SHADOW_TICK_SECONDS` (default 30 s: the p95 quote-to-snapshot lag stays under 45 s) and starts a run when
new files arrived and no live run is in flight. The run targets today's UTC partition; rows of other days
(midnight, a late file) are written too and reported as their own partitions.

Where the run executes: when no other run is going and the backlog is a normal tick's, the sensor executes it
itself in the code server (`defs/inline.py`); otherwise it requests a launched run, queued behind the others.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from kalshi_shadow.config import Settings, env_number
from kalshi_shadow.defs.decisions import kalshi_would_trades
from kalshi_shadow.defs.inline import INLINE_TAG, active_runs, run_inline, why_not_inline
from kalshi_shadow.defs.ingest import kalshi_contracts, raw_assets
from kalshi_shadow.defs.pricing import LIVE_TAG, kalshi_edge_snapshots, spot_index, spot_vol
from kalshi_shadow.raw import RAW_TABLES
from kalshi_shadow.raw.store import RawFileName, list_raw_files

live_job = dg.define_asset_job(
    "live_job",
    selection=dg.AssetSelection.assets(*raw_assets, kalshi_contracts, spot_index, spot_vol, kalshi_edge_snapshots, kalshi_would_trades),
    executor_def=dg.in_process_executor,
    description="One live micro-batch: load new raw files, then contracts, the vol grid, snapshots and decisions; launched by live_tick_sensor.",
)

INLINE_MAX_NEW_FILES = 1000  # a normal tick brings ~100 files; more is a backlog, for a launched run


def tick_seconds() -> int:
    return env_number("KALSHI_SHADOW_TICK_SECONDS", 30, minimum=1, integer=True)


def raw_signature(raw_dir: Path) -> dict[str, dict[str, int]]:
    """Per raw table, each writer's highest file number among the files waiting in the raw folder. A file is new
    when its writer's number went up (or the writer is new): file numbers, not names, because a name starts with
    the wall-clock flush time, which can step backwards (NTP) and would make a new file look old. Loaded files are
    archived every hour, so the folder stays small enough to list every tick."""
    out: dict[str, dict[str, int]] = {}
    for t in RAW_TABLES:
        writers: dict[str, int] = {}
        for p in list_raw_files(raw_dir, t):
            name = RawFileName.parse(p.name)
            if name is not None and name.seq > writers.get(name.writer, 0):
                writers[name.writer] = name.seq
        if writers:
            out[t] = writers
    return out


@dg.sensor(name="live_tick_sensor", job=live_job, minimum_interval_seconds=tick_seconds(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="One live run per tick when the collectors wrote new raw files and no live run is in flight: "
                       "executed by the sensor itself when the warehouse is free, else requested (queued).")
def live_tick_sensor(context: dg.SensorEvaluationContext):
    now = raw_signature(Settings.from_env().raw_dir)
    seen = json.loads(context.cursor) if context.cursor else {}
    seen = {t: w for t, w in seen.items() if isinstance(w, dict)}  # a cursor of file names (an older release): all new
    new_files = sum(max(n - seen.get(t, {}).get(w, 0), 0) for t, writers in now.items() for w, n in writers.items())
    if not new_files:
        return dg.SkipReason("no new raw files")
    active = active_runs(context.instance, live_job.name)
    if active:
        return dg.SkipReason(f"live run {active[0].run_id[:8]} is still going; new files wait for the next tick")
    context.update_cursor(json.dumps(now, sort_keys=True))
    today = datetime.now(timezone.utc).date().isoformat()
    tags = {LIVE_TAG: "live"}
    why_queued = (f"a backlog of {new_files} files (over {INLINE_MAX_NEW_FILES})" if new_files > INLINE_MAX_NEW_FILES
                  else why_not_inline(context.instance))
    if why_queued is None:
        ran = run_inline(context.instance, live_job.name, sensor="live_tick_sensor", tags=tags, partition_key=today,
                         hold_warehouse_open=True)
        return dg.SkipReason(f"nothing to launch: {ran}")
    key = hashlib.sha1(json.dumps(now, sort_keys=True).encode()).hexdigest()[:16]
    context.log.info(f"live run requested (queued): {why_queued}")
    return dg.RunRequest(run_key=f"live:{key}", partition_key=today, tags={**tags, INLINE_TAG: "no"})


defs = dg.Definitions(jobs=[live_job], sensors=[live_tick_sensor])
