"""Runs a sensor executes itself, in the code server, instead of requesting a launched run.

A launched run is a new process that imports the code location (~3 CPU-seconds) before its work, which for the
frequent small jobs (a live tick every 30 s, settlement reads and scores every minute on the fast clock) was most
of the platform's CPU. `up` keeps one code server for its whole life (supervisor.py), so a sensor there can execute
the job with `execute_in_process` on the instance: the same run record, events, checks and warehouse pool slot as a
launched run, tagged `kalshi_shadow/inline=yes` with the executing pid. It does so only when no other run is going
(the warehouse is taken in turn, and a queued run keeps its place); otherwise, or with `KALSHI_SHADOW_INLINE_RUNS=0`,
the sensor requests the run as before (`inline=no`).
"""

from __future__ import annotations

import os
import time

import dagster as dg

from kalshi_shadow.config import env_number

INLINE_TAG = "kalshi_shadow/inline"     # yes: executed by a sensor in the code server; no: launched
PID_TAG = "kalshi_shadow/inline_pid"    # the process executing an inline run
SENSOR_TAG = "dagster/sensor_name"      # Dagster's own tag on a sensor's runs ("Launched by" in the UI)
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def inline_enabled() -> bool:
    return env_number("KALSHI_SHADOW_INLINE_RUNS", 1, minimum=0, integer=True) == 1


def why_not_inline(instance: dg.DagsterInstance) -> str | None:
    """Why a run must be launched rather than executed here; None if it may run here."""
    if not inline_enabled():
        return "KALSHI_SHADOW_INLINE_RUNS=0"
    busy = [r for r in instance.get_runs(dg.RunsFilter(statuses=ACTIVE), limit=5) if not orphaned(instance, r)]
    if busy:
        return f"run {busy[0].run_id[:8]} ({busy[0].job_name}) is {busy[0].status.value.lower()}: the warehouse is taken in turn"
    return None


def orphaned(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """An inline run whose process is gone (the code server was killed mid-run) would look in flight forever and
    hold back every later tick: mark it failed (the run-failure alert reports it) and say so."""
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
    instance.report_run_failed(run, f"{run.job_name} executed inline by process {pid}, which ended before the run did")
    return True


def active_runs(instance: dg.DagsterInstance, job_name: str) -> list[dg.DagsterRun]:
    return [r for r in instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=ACTIVE), limit=5) if not orphaned(instance, r)]


_resolved: dict[str, dg.JobDefinition] = {}


def run_inline(instance: dg.DagsterInstance, job_name: str, *, sensor: str, tags: dict[str, str],
               partition_key: str | None = None, hold_warehouse_open: bool = False) -> str:
    """Execute the job here, on the instance, for `sensor` (the UI then says the sensor launched it, as it does for a
    requested run); returns what happened, for the sensor's tick. `hold_warehouse_open`: the run's steps share one
    open database (Warehouse.hold_open), for a run that never waits on anything else."""
    if job_name not in _resolved:
        from kalshi_shadow.definitions import defs  # the code location, already loaded in this process

        _resolved[job_name] = defs.resolve_job_def(job_name)
    from kalshi_shadow.defs.resources import resources, warehouse_from_settings

    res = resources()  # as the environment says now, as a launched run's would be
    if hold_warehouse_open:  # (a constructor argument: Dagster rebuilds a resource from those, not from a copy)
        res["warehouse"] = warehouse_from_settings(hold_open=True)
    started = time.monotonic()
    result = _resolved[job_name].execute_in_process(
        instance=instance, partition_key=partition_key, raise_on_error=False, resources=res,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # not a DEBUG line per event in the server's log
        tags={**tags, SENSOR_TAG: sensor, INLINE_TAG: "yes", PID_TAG: str(os.getpid())})
    return (f"{job_name} run {result.run_id[:8]}{f' ({partition_key})' if partition_key else ''} ran in the sensor and "
            f"{'succeeded' if result.success else 'FAILED'} in {time.monotonic() - started:.1f} s")
