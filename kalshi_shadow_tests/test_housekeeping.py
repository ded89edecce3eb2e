"""Run-history pruning against a real instance (the repo's dagster.yaml on a temporary DAGSTER_HOME) and real runs.

Run timestamps cannot be back-dated through the public API, so runs are "aged" by passing a `now` in the future.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from kalshi_shadow.compute_logs import FileComputeLogManager
from kalshi_shadow.supervisor import instance_yaml

from kalshi_shadow.defs.housekeeping import (
    FAILED_RUN_RETENTION_ENV,
    RUN_RETENTION_ENV,
    prune_run_history,
    retention_days,
)



@pytest.fixture(params=["up", "repo"])
def instance(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """What `up` installs (one consolidated event database), and the repo's dagster.yaml as `dagster dev` run by hand
    from the repo root reads it (Dagster's default: one event file per run). Both also prove the retention section loads."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    text = instance_yaml(home) if request.param == "up" else (Path(__file__).resolve().parents[1] / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(text)
    inst = dg.DagsterInstance.from_config(str(home))
    yield inst
    inst.dispose()


@dg.op
def chatty() -> None:
    print("to stdout: captured in compute logs")


@dg.op
def explode() -> None:
    raise RuntimeError("boom")


@dg.job
def ok_job():
    chatty()


@dg.job
def failing_job():
    explode()


@dg.asset
def tiny_asset() -> dg.MaterializeResult:
    print("materializing")
    return dg.MaterializeResult(metadata={"rows": 1})


def _compute_log_dir(instance: dg.DagsterInstance, run_id: str) -> Path:
    return Path(instance.root_directory) / "storage" / run_id


def _sharded(instance: dg.DagsterInstance) -> bool:
    return not (Path(instance.root_directory) / "event_log.db").exists()


def _shard(instance: dg.DagsterInstance, run_id: str) -> Path:
    return Path(instance.root_directory) / "history" / "runs" / f"{run_id}.db"


def _assert_gone(instance: dg.DagsterInstance, run_id: str) -> None:
    assert instance.get_run_by_id(run_id) is None
    assert not _compute_log_dir(instance, run_id).exists()
    assert not _shard(instance, run_id).exists()
    assert instance.get_records_for_run(run_id).records == []


def _assert_kept(instance: dg.DagsterInstance, run_id: str) -> None:
    assert instance.get_run_by_id(run_id) is not None
    assert instance.get_records_for_run(run_id).records


def test_ups_instance_writes_compute_logs_to_files_the_ui_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (home / "dagster.yaml").write_text(instance_yaml(home))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert isinstance(inst.compute_log_manager, FileComputeLogManager)
        run_id = ok_job.execute_in_process(instance=inst).run_id
        (out,) = (_compute_log_dir(inst, run_id) / "compute_logs").glob("*.out")
        assert "to stdout: captured in compute logs" in out.read_text()
        assert (_compute_log_dir(inst, run_id) / "compute_logs" / out.name).with_suffix(".complete").exists()


def test_prunes_old_finished_runs_keeps_failures_longer_and_never_touches_active(instance: dg.DagsterInstance) -> None:
    ok = [ok_job.execute_in_process(instance=instance).run_id for _ in range(2)]
    asset_run = dg.materialize([tiny_asset], instance=instance).run_id
    failed = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    canceled = instance.create_run_for_job(ok_job)
    instance.report_run_canceled(canceled)
    started = instance.create_run_for_job(ok_job, status=dg.DagsterRunStatus.STARTED).run_id
    not_started = instance.create_run_for_job(ok_job, status=dg.DagsterRunStatus.NOT_STARTED).run_id
    canceling = instance.create_run_for_job(ok_job, status=dg.DagsterRunStatus.CANCELING).run_id
    active = {started: dg.DagsterRunStatus.STARTED, not_started: dg.DagsterRunStatus.NOT_STARTED,
              canceling: dg.DagsterRunStatus.CANCELING}
    finished = [*ok, asset_run, canceled.run_id]

    for run_id in [*ok, asset_run, failed.run_id]:
        assert list((_compute_log_dir(instance, run_id) / "compute_logs").glob("*.out"))
        assert _shard(instance, run_id).exists() == _sharded(instance)
    assert instance.get_run_by_id(canceled.run_id).status == dg.DagsterRunStatus.CANCELED

    # Everything is fresh: nothing goes.
    assert prune_run_history(instance, keep_days=2, keep_failed_days=30)["runs_deleted"] == 0

    # Two hours either side of the 2-day cutoff, given in zones behind and ahead of UTC: only the UTC instant counts.
    t0 = datetime.now(timezone.utc)
    almost = (t0 + timedelta(days=2, hours=-2)).astimezone(ZoneInfo("Asia/Tokyo"))
    assert prune_run_history(instance, keep_days=2, keep_failed_days=30, now=almost)["runs_deleted"] == 0
    later = (t0 + timedelta(days=2, hours=2)).astimezone(ZoneInfo("America/New_York"))
    counts = prune_run_history(instance, keep_days=2, keep_failed_days=30, now=later)
    assert counts["runs_deleted"] == len(finished)
    assert counts["failed_runs_deleted"] == 0
    assert counts["failed_runs_kept"] == 1
    assert counts["bytes_freed"] > (100_000 if _sharded(instance) else 0)  # compute logs, and ~100 KB per event shard
    for run_id in finished:
        _assert_gone(instance, run_id)
    assert instance.fetch_materializations(dg.AssetKey("tiny_asset"), limit=10).records == []
    _assert_kept(instance, failed.run_id)
    assert list((_compute_log_dir(instance, failed.run_id) / "compute_logs").glob("*.err"))
    for run_id in active:
        assert instance.get_run_by_id(run_id) is not None

    # Just inside the failure retention the failure stays; past it, it goes. Active runs survive even a year.
    assert prune_run_history(instance, keep_days=2, keep_failed_days=30,
                             now=datetime.now(timezone.utc) + timedelta(days=29))["runs_deleted"] == 0
    counts = prune_run_history(instance, keep_days=2, keep_failed_days=30,
                               now=datetime.now(timezone.utc) + timedelta(days=365))
    assert counts == {"runs_deleted": 1, "failed_runs_deleted": 1, "failed_runs_kept": 0,
                      "bytes_freed": counts["bytes_freed"]}
    _assert_gone(instance, failed.run_id)
    assert {run_id: instance.get_run_by_id(run_id).status for run_id in active} == active


def test_pages_oldest_first_and_caps_one_call(instance: dg.DagsterInstance) -> None:
    run_ids = [ok_job.execute_in_process(instance=instance).run_id for _ in range(5)]
    later = datetime.now(timezone.utc) + timedelta(days=3)
    counts = prune_run_history(instance, keep_days=2, keep_failed_days=30, now=later, batch_size=2, max_runs=3)
    assert counts["runs_deleted"] == 3
    assert [instance.get_run_by_id(r) is None for r in run_ids] == [True, True, True, False, False]
    counts = prune_run_history(instance, keep_days=2, keep_failed_days=30, now=later, batch_size=2)
    assert counts["runs_deleted"] == 2
    assert instance.get_runs_count() == 0


def test_naive_now_is_rejected(instance: dg.DagsterInstance) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        prune_run_history(instance, keep_days=2, keep_failed_days=30, now=datetime.now())


def test_housekeeping_job_is_wired_and_prunes(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    from kalshi_shadow.definitions import defs

    schedule = defs.resolve_schedule_def("housekeeping_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("17 * * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("housekeeping_job")
    assert schedule.job_name == job.name
    assert all(node.definition.pool is None for node in job.graph.node_dict.values())  # not in the duckdb pool

    old = ok_job.execute_in_process(instance=instance).run_id
    time.sleep(1.0)
    monkeypatch.setenv(RUN_RETENTION_ENV, "0.00001")  # under a second: `old` is now past retention
    monkeypatch.delenv(FAILED_RUN_RETENTION_ENV, raising=False)
    result = job.execute_in_process(instance=instance)
    assert result.success
    _assert_gone(instance, old)
    assert instance.get_run_by_id(result.run_id) is not None  # its own run was in progress, so it stayed
    [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
                and e.step_key == "prune_dagster_run_history"]
    metadata = output.step_output_data.metadata
    assert metadata["runs_deleted"].value == 1
    assert metadata["keep_failed_days"].value == 30.0


def test_raw_archives_older_than_the_retention_are_removed(instance: dg.DagsterInstance, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Real archive folders on disk, the real job: days past KALSHI_SHADOW_RAW_ARCHIVE_DAYS go, the rest stay."""
    from kalshi_shadow.definitions import defs

    archive = tmp_path / "raw" / "_archive"
    today = datetime.now(timezone.utc).date()
    for table in ("spot_ticks", "kalshi_quotes"):
        for age in (0, 1, 2, 3, 10):
            day = archive / table / f"date={today - timedelta(days=age)}"
            day.mkdir(parents=True)
            (day / "00-abc.parquet").write_bytes(b"x" * 1000)
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KALSHI_SHADOW_RAW_ARCHIVE_DAYS", "2")
    result = defs.resolve_job_def("housekeeping_job").execute_in_process(instance=instance)
    assert result.success
    left = sorted(p.name for p in archive.glob("spot_ticks/date=*"))
    assert left == [f"date={today - timedelta(days=a)}" for a in (2, 1, 0)]
    [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
                and e.step_key == "prune_old_raw_archives"]
    assert output.step_output_data.metadata["archive_days_removed"].value == 4
    assert output.step_output_data.metadata["archive_bytes_freed"].value == 4000
    monkeypatch.setenv("KALSHI_SHADOW_RAW_ARCHIVE_DAYS", "0")  # keep them all
    assert defs.resolve_job_def("housekeeping_job").execute_in_process(instance=instance).success
    assert len(list(archive.glob("*/date=*"))) == 6


@pytest.mark.parametrize("value", ["two", "-1", "0", "nan", "inf"])
def test_bad_retention_value_names_the_variable(value: str, instance: dg.DagsterInstance,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAILED_RUN_RETENTION_ENV, value)
    with pytest.raises(ValueError, match=FAILED_RUN_RETENTION_ENV):
        retention_days(FAILED_RUN_RETENTION_ENV, 30.0)

    from kalshi_shadow.definitions import defs

    result = defs.resolve_job_def("housekeeping_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert f"ValueError: {FAILED_RUN_RETENTION_ENV}={value!r}" in failure.step_failure_data.error.to_string()


def test_retention_defaults_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_RETENTION_ENV, raising=False)
    assert retention_days(RUN_RETENTION_ENV, 2.0) == 2.0
    monkeypatch.setenv(RUN_RETENTION_ENV, " 0.5 ")
    assert retention_days(RUN_RETENTION_ENV, 2.0) == 0.5
