"""Housekeeping: keep DAGSTER_HOME and the raw archives bounded while the platform runs unattended for months.

About 4,000 runs a day each leave a run record, an event log, compute logs (stdout/stderr) and, with the default
SQLite storage, a per-run event database of ~125 KB that `DagsterInstance.delete_run` empties but does not remove.
Nothing deletes them by default, so DAGSTER_HOME grows by gigabytes a day. An hourly job deletes finished runs past
their retention with all of those files; sensor/schedule ticks are purged by Dagster itself (`retention:` in
dagster.yaml).

Failures are kept much longer than successes (30 days vs 2 by default): they are what people look back at, and
the run-retry daemon and failure alerts work on them. Queued and in-progress runs are never touched.

Deleting a run also deletes its events from the index, including asset materializations, so the UI's
materialization history reaches back only `KALSHI_SHADOW_RUN_RETENTION_DAYS`; the warehouse is the record.
"""

import math
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

RUN_RETENTION_ENV = "KALSHI_SHADOW_RUN_RETENTION_DAYS"
FAILED_RUN_RETENTION_ENV = "KALSHI_SHADOW_FAILED_RUN_RETENTION_DAYS"
DEFAULT_RUN_RETENTION_DAYS = 2.0
DEFAULT_FAILED_RUN_RETENTION_DAYS = 30.0

# Finished runs only: QUEUED / NOT_STARTED / STARTING / STARTED / CANCELING / MANAGED are never selected.
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED]
FAILED_STATUSES = [dg.DagsterRunStatus.FAILURE]

BATCH_SIZE = 200  # run records held in memory at once
# One hourly run deletes at most this many (~2.5 days of runs): a first run over a months-long backlog stays
# minutes long instead of holding one of the two run slots for hours; the backlog drains over a few ticks.
MAX_RUNS_PER_TICK = 10_000


def retention_days(env_var: str, default: float) -> float:
    """A retention period in days from `env_var` (unset or empty: `default`); anything but a positive number
    raises, naming the variable, rather than silently deleting too much or nothing."""
    raw = os.environ.get(env_var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{env_var}={raw!r} is not a number of days (e.g. {env_var}={default:g})") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{env_var}={raw!r} must be a positive number of days (e.g. {env_var}={default:g})")
    return value


def _tree_bytes(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _shard_paths(instance: dg.DagsterInstance, run_id: str) -> list[Path]:
    """The run's own event database (and WAL/SHM) under the default run-sharded SQLite event log; none otherwise."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqliteEventLogStorage):
        return []
    db = Path(storage.path_for_shard(run_id))
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def _delete_run(instance: dg.DagsterInstance, run_id: str) -> int:
    """Delete one finished run: compute logs, run record, events, and its event shard file. Returns bytes freed
    (files only; rows in the shared SQLite files become free pages that later writes reuse)."""
    manager = instance.compute_log_manager
    freed = 0
    if isinstance(manager, LocalComputeLogManager):
        # Layout: <base_dir>/<run_id>/compute_logs/<file_key>.{out,err,complete}; op outputs of fs_io_manager
        # live in the same <run_id> folder when base_dir is the instance storage dir, and go with it.
        freed += _tree_bytes(Path(manager._base_dir) / run_id)
    # Logs first: once the run record is gone nothing would lead back to them.
    manager.delete_logs(prefix=[run_id])
    instance.delete_run(run_id)  # run record, tags, and its events in the run shard and the index
    storage = instance.event_log_storage
    for path in _shard_paths(instance, run_id):
        if path.exists():
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
    if isinstance(storage, SqliteEventLogStorage):
        # The storage remembers which shards it has created; forget this one so a later read of the (deleted)
        # run's events in this process recreates an empty shard instead of failing on a table-less file.
        getattr(storage, "_initialized_dbs", set()).discard(run_id)
    return freed


def prune_run_history(instance: dg.DagsterInstance, *, keep_days: float, keep_failed_days: float,
                      now: datetime | None = None, batch_size: int = BATCH_SIZE,
                      max_runs: int | None = None) -> dict[str, int]:
    """Delete SUCCESS/CANCELED runs last updated more than `keep_days` before `now`, and FAILURE runs more than
    `keep_failed_days` before, with their event logs and compute logs; other statuses are never touched.

    Pages through run records `batch_size` at a time, oldest first, so memory stays flat however large the
    backlog; `max_runs` caps the deletions of one call. `now` (timezone-aware, default: the current time) lets
    tests age runs without rewriting their timestamps. Returns counts: runs_deleted, failed_runs_deleted,
    failed_runs_kept (failures older than `keep_days` retained for `keep_failed_days`), bytes_freed.
    """
    if keep_days <= 0 or keep_failed_days <= 0:
        raise ValueError(f"retention must be positive (keep_days={keep_days}, keep_failed_days={keep_failed_days})")
    now = now if now is not None else datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (run storage compares UTC timestamps)")
    now = now.astimezone(timezone.utc)  # run storage drops tzinfo from filter datetimes: they must be UTC
    finished_cutoff = now - timedelta(days=keep_days)
    failed_cutoff = now - timedelta(days=keep_failed_days)

    counts = {"runs_deleted": 0, "failed_runs_deleted": 0, "failed_runs_kept": 0, "bytes_freed": 0}
    budget = max_runs if max_runs is not None else math.inf
    for statuses, cutoff in ((FAILED_STATUSES, failed_cutoff), (FINISHED_STATUSES, finished_cutoff)):
        runs_filter = dg.RunsFilter(statuses=statuses, updated_before=cutoff)
        attempted: set[str] = set()
        while counts["runs_deleted"] < budget:
            limit = int(min(batch_size, budget - counts["runs_deleted"]))
            # No cursor: deleted runs drop out of the result, and a cursor pointing at a deleted run matches nothing.
            records = instance.get_run_records(filters=runs_filter, limit=limit, ascending=True)
            fresh = [r for r in records if r.dagster_run.run_id not in attempted]
            if not fresh:  # nothing left, or only runs that survived a delete: never loop forever
                break
            for record in fresh:
                run_id = record.dagster_run.run_id
                attempted.add(run_id)
                counts["bytes_freed"] += _delete_run(instance, run_id)
                counts["runs_deleted"] += 1
                if record.dagster_run.status == dg.DagsterRunStatus.FAILURE:
                    counts["failed_runs_deleted"] += 1
    counts["failed_runs_kept"] = instance.get_runs_count(
        filters=dg.RunsFilter(statuses=FAILED_STATUSES, updated_before=finished_cutoff))
    return counts


@dg.op(out=dg.Out(dg.Nothing),
       description=f"Deletes finished runs (with event and compute logs) older than ${RUN_RETENTION_ENV} days "
                   f"(default {DEFAULT_RUN_RETENTION_DAYS:g}), failed runs older than ${FAILED_RUN_RETENTION_ENV} "
                   f"(default {DEFAULT_FAILED_RUN_RETENTION_DAYS:g}). Touches only Dagster's own storage.")
def prune_dagster_run_history(context: dg.OpExecutionContext) -> dg.Output:
    # Read at run time so a changed variable applies without reloading the code location; no warehouse pool.
    keep_days = retention_days(RUN_RETENTION_ENV, DEFAULT_RUN_RETENTION_DAYS)
    keep_failed_days = retention_days(FAILED_RUN_RETENTION_ENV, DEFAULT_FAILED_RUN_RETENTION_DAYS)
    counts = prune_run_history(context.instance, keep_days=keep_days, keep_failed_days=keep_failed_days,
                               max_runs=MAX_RUNS_PER_TICK)
    context.log.info(f"deleted {counts['runs_deleted']} runs ({counts['failed_runs_deleted']} failed), "
                     f"freed {counts['bytes_freed'] / 1e6:.1f} MB; kept {counts['failed_runs_kept']} failed runs "
                     f"older than {keep_days:g} days (failures kept {keep_failed_days:g} days)")
    if counts["runs_deleted"] >= MAX_RUNS_PER_TICK:
        context.log.warning(f"hit the cap of {MAX_RUNS_PER_TICK} runs; the rest go on the next ticks")
    return dg.Output(None, metadata={**counts, "keep_days": keep_days, "keep_failed_days": keep_failed_days})


ARCHIVE_RETENTION_ENV = "KALSHI_SHADOW_RAW_ARCHIVE_DAYS"
DEFAULT_ARCHIVE_RETENTION_DAYS = 14.0


def archive_retention_days() -> float | None:
    """Days of raw archives kept (`KALSHI_SHADOW_RAW_ARCHIVE_DAYS`, 14; 0 keeps them all). Every archived row is in
    the warehouse too; the archives are there to rebuild it, so they are the first thing to let go on a small disk."""
    raw = os.environ.get(ARCHIVE_RETENTION_ENV, "").strip()
    if raw in ("0", "0.0"):
        return None
    return retention_days(ARCHIVE_RETENTION_ENV, DEFAULT_ARCHIVE_RETENTION_DAYS)


def prune_raw_archives(archive_root: Path, keep_days: float, now: datetime | None = None) -> dict[str, int]:
    """Delete the hourly archives (`raw/_archive/<table>/date=YYYY-MM-DD/`) of UTC days that ended more than
    `keep_days` ago; returns folders and bytes removed."""
    now = now or datetime.now(timezone.utc)
    cutoff = (now - timedelta(days=keep_days)).date()
    removed = freed = 0
    for folder in sorted(archive_root.glob("*/date=*")) if archive_root.is_dir() else []:
        try:
            day = datetime.strptime(folder.name, "date=%Y-%m-%d").date()
        except ValueError:
            continue
        if day < cutoff:
            freed += _tree_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return {"archive_days_removed": removed, "archive_bytes_freed": freed}


@dg.op(out=dg.Out(dg.Nothing), description=f"Deletes raw archives older than ${ARCHIVE_RETENTION_ENV} days "
                                            f"(default {DEFAULT_ARCHIVE_RETENTION_DAYS:g}; 0 keeps them). Files only, no warehouse.")
def prune_old_raw_archives(context: dg.OpExecutionContext) -> dg.Output:
    from kalshi_shadow.config import Settings
    from kalshi_shadow.warehouse.compaction import archive_dir

    keep = archive_retention_days()
    if keep is None:
        return dg.Output(None, metadata={"keep_days": "forever"})
    counts = prune_raw_archives(archive_dir(Settings.from_env().raw_dir), keep)
    if counts["archive_days_removed"]:
        context.log.info(f"removed {counts['archive_days_removed']} archive day folders ({counts['archive_bytes_freed'] / 1e6:.1f} MB)"
                         f" older than {keep:g} days")
    return dg.Output(None, metadata={**counts, "keep_days": keep})


@dg.job(description="Deletes old Dagster run history and old raw archives so the disk stays bounded (never touches "
                    "the warehouse).")
def housekeeping_job():
    prune_dagster_run_history()
    prune_old_raw_archives()


housekeeping_schedule = dg.ScheduleDefinition(
    name="housekeeping_schedule", job=housekeeping_job, cron_schedule="17 * * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly run-history pruning, at minute 17 (UTC).",
)

defs = dg.Definitions(jobs=[housekeeping_job], schedules=[housekeeping_schedule])
