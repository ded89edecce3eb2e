"""The live path: one run per tick loads every new raw file, then derives everything live from it, in order.

One run on the in-process executor (one process, no per-step subprocesses) does, in dependency order: the raw
loads, `kalshi_contracts`, `spot_index`, `spot_vol`, `kalshi_edge_snapshots`, then `kalshi_would_trades`. Pricing therefore
never races loading, the snapshots step prices only quotes whose inputs are complete (see `pricing/snapshots.py`),
and decisions follow the snapshots up to the same frontier (see `decisions/engine.py`).

`live_tick_sensor` looks at the raw folder only (never DuckDB; each writer's file numbers, never the clock) every
`KALSHI_SHADOW_TICK_SECONDS` (default 30 s: the p95 quote-to-snapshot lag stays under 45 s) and starts a run when
new files arrived and no live run is in flight. The run targets today's UTC partition; rows of other days
(midnight, a late file) are written too and reported as their own partitions.

Where the run executes: a run launched by the daemon is a new process that imports the code location first (~3 of
its ~7 CPU-seconds), and at a run every 30 s that alone kept the platform above a quarter of a core. So when no other
run is going and the backlog is a normal tick's, the sensor executes the run itself, in the code server that already
has the code loaded (`execute_in_process` on the instance: the same run record, events, checks and pool slot as a
launched run; the tick says which run it executed). Otherwise (another run holds or may take the warehouse, a
backlog after downtime, or `KALSHI_SHADOW_LIVE_INLINE=0`) it requests the run as before, queued behind the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from kalshi_shadow.config import Settings, env_number
from kalshi_shadow.defs.decisions import kalshi_would_trades
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

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


INLINE_MAX_NEW_FILES = 1000  # a normal tick brings ~100 files; more is a backlog, for a launched run


def tick_seconds() -> int:
    return env_number("KALSHI_SHADOW_TICK_SECONDS", 30, minimum=1, integer=True)


def inline_enabled() -> bool:
    return env_number("KALSHI_SHADOW_LIVE_INLINE", 1, minimum=0, integer=True) == 1


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
    active = [r for r in context.instance.get_runs(dg.RunsFilter(job_name=live_job.name, statuses=ACTIVE), limit=5)
              if not _orphaned(context.instance, r)]
    if active:
        return dg.SkipReason(f"live run {active[0].run_id[:8]} is still going; new files wait for the next tick")
    context.update_cursor(json.dumps(now, sort_keys=True))
    today = datetime.now(timezone.utc).date().isoformat()
    tags = {LIVE_TAG: "live"}
    why_queued = _why_not_inline(context.instance, new_files)
    if why_queued is None:
        return _run_inline(context.instance, today, tags)
    key = hashlib.sha1(json.dumps(now, sort_keys=True).encode()).hexdigest()[:16]
    context.log.info(f"live run requested (queued): {why_queued}")
    return dg.RunRequest(run_key=f"live:{key}", partition_key=today, tags={**tags, INLINE_TAG: "no"})


INLINE_TAG = "kalshi_shadow/inline"  # yes: executed by live_tick_sensor in the code server; no: launched


def _why_not_inline(instance: dg.DagsterInstance, new_files: int) -> str | None:
    """Why this tick's run must be launched rather than executed here; None if it may run here."""
    if not inline_enabled():
        return "KALSHI_SHADOW_LIVE_INLINE=0"
    if new_files > INLINE_MAX_NEW_FILES:
        return f"a backlog of {new_files} files (over {INLINE_MAX_NEW_FILES})"
    busy = instance.get_runs(dg.RunsFilter(statuses=ACTIVE), limit=1)
    if busy:
        return f"run {busy[0].run_id[:8]} ({busy[0].job_name}) is {busy[0].status.value.lower()}: the warehouse is taken in turn"
    return None


PID_TAG = "kalshi_shadow/inline_pid"  # the code server process executing an inline run


def _orphaned(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """An inline run whose process is gone (the code server was killed mid-run) would look in flight forever and
    hold back every later tick: mark it failed (the run-failure alert reports it) and go on."""
    pid = run.tags.get(PID_TAG)
    if run.tags.get(INLINE_TAG) != "yes" or not pid:
        return False
    try:
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        pass
    except PermissionError:
        return False  # alive, another user's
    instance.report_run_failed(run, f"live run executed inline by process {pid}, which ended before the run did")
    return True


_resolved: dict[str, dg.JobDefinition] = {}


def _run_inline(instance: dg.DagsterInstance, partition_key: str, tags: dict[str, str]) -> dg.SkipReason:
    """Execute the live run here, on the instance: a run record like any other (the UI lists it, the run-failure
    alert sees it, the warehouse pool's slot is claimed per step)."""
    if "live_job" not in _resolved:
        from kalshi_shadow.definitions import defs  # the code location, already loaded in this process

        _resolved["live_job"] = defs.resolve_job_def(live_job.name)
    started = time.monotonic()
    result = _resolved["live_job"].execute_in_process(instance=instance, partition_key=partition_key,
                                                      tags={**tags, INLINE_TAG: "yes", PID_TAG: str(os.getpid())},
                                                      raise_on_error=False)
    outcome = "succeeded" if result.success else "FAILED"
    return dg.SkipReason(f"nothing to launch: live run {result.run_id[:8]} ran in the sensor and {outcome} "
                         f"in {time.monotonic() - started:.1f} s")


defs = dg.Definitions(jobs=[live_job], sensors=[live_tick_sensor])
