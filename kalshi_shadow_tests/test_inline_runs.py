"""Sensors that execute their runs in the code server (defs/inline.py): the settlements sensor and the scores
sensor run their jobs themselves when the warehouse is free and request launched runs when it is not."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from kalshi_shadow.defs import inline
from kalshi_shadow.defs.settlements import settlements_sensor
from kalshi_shadow.sim.server import SimHandle


def test_the_settlements_sensor_reads_outcomes_itself_when_the_warehouse_is_free(sim: SimHandle, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KALSHI_BASE_URL", sim.kalshi_base_url)
    instance = dg.DagsterInstance.ephemeral()
    result = settlements_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason) and "settlements_job run" in result.skip_message and "succeeded" in result.skip_message
    (run,) = instance.get_runs()
    assert run.job_name == "settlements_job" and run.status == dg.DagsterRunStatus.SUCCESS and run.tags[inline.INLINE_TAG] == "yes"
    assert instance.get_latest_materialization_event(dg.AssetKey("kalshi_settlements")).run_id == run.run_id

    # Another job's run is going: the read is requested (queued behind it), not executed here.
    instance.add_run(dg.DagsterRun(job_name="health_job", run_id="busy0000-health", status=dg.DagsterRunStatus.STARTED))
    req = settlements_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(req, dg.RunRequest) and req.tags == {inline.INLINE_TAG: "no"}
    # A settlements run of its own still going: nothing more is asked for.
    instance.add_run(dg.DagsterRun(job_name="settlements_job", run_id="busy0000-settle", status=dg.DagsterRunStatus.STARTED))
    assert "still going" in settlements_sensor(dg.build_sensor_context(instance=instance)).skip_message


def test_inline_runs_can_be_turned_off(sim: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KALSHI_BASE_URL", sim.kalshi_base_url)
    monkeypatch.setenv("KALSHI_SHADOW_INLINE_RUNS", "0")
    instance = dg.DagsterInstance.ephemeral()
    assert isinstance(settlements_sensor(dg.build_sensor_context(instance=instance)), dg.RunRequest)
    assert not instance.get_runs()
