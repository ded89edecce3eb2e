"""Alerts end to end with real parts: a webhook receiver on loopback reached through Apprise's json:// URL, and the
sensors evaluated against a real Dagster instance whose runs materialise a checked asset (no mocks, no patching).
"""

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from kalshi_shadow.alerts import AlertSettings, flush_run_failures, parse_urls, raise_alert, report_run_failure, resolve_alert
from kalshi_shadow.alerts import journal
from kalshi_shadow.alerts.state import read_state
from kalshi_shadow.defs.alerts import AlertDestinations, alert_on_failed_checks, alert_on_run_failure
from kalshi_shadow_tests.webhook import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProbeConfig(dg.Config):
    passed: bool = True
    crash: bool = False


@dg.asset(check_specs=[dg.AssetCheckSpec("probe_is_sane", asset="probe")])
def probe(config: ProbeConfig) -> dg.MaterializeResult:
    if config.crash:
        raise RuntimeError("probe crashed")
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
        check_name="probe_is_sane", passed=config.passed, severity=dg.AssetCheckSeverity.ERROR, metadata={"bad_rows": 0 if config.passed else 3})])


def _run(instance: dg.DagsterInstance, passed: bool = True, crash: bool = False) -> None:
    dg.materialize([probe], instance=instance, raise_on_error=False,
                   run_config={"ops": {"probe": {"config": {"passed": passed, "crash": crash}}}})


def _tick(sensor, instance: dg.DagsterInstance, cursor: str | None, alerting: AlertDestinations) -> str:
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerting": alerting})
    sensor(ctx)
    return ctx.cursor


def _settings(tmp_path: Path, *urls: str, **kw) -> AlertSettings:
    return AlertSettings(data_dir=tmp_path, urls=urls, backoff_seconds=(0.05,), **kw)


def test_failed_check_alerts_once_suppresses_repeats_and_recovers(tmp_path: Path, receiver: Receiver) -> None:
    instance = dg.DagsterInstance.ephemeral()
    alerting = AlertDestinations(urls=receiver.url(), data_dir=str(tmp_path), repeat_minutes=60, backoff_seconds=0.05)
    cursor = _tick(alert_on_failed_checks, instance, None, alerting)  # starts at the newest event: none yet

    _run(instance, passed=False)
    cursor = _tick(alert_on_failed_checks, instance, cursor, alerting)
    assert [m["type"] for m in receiver.accepted] == ["failure"]
    assert "blind or wrong" in receiver.accepted[0]["title"] and "probe_is_sane" in receiver.accepted[0]["title"]
    assert "bad_rows=3" in receiver.accepted[0]["message"]

    _run(instance, passed=False)
    _run(instance, passed=False)
    again = _tick(alert_on_failed_checks, instance, cursor, alerting)
    assert _tick(alert_on_failed_checks, instance, again, alerting) == again  # nothing new, nothing re-read
    assert len(receiver.accepted) == 1, "repeats inside the window are suppressed"
    assert read_state(tmp_path / "alerts_state.json")["check:probe:probe_is_sane"]["suppressed"] == 2

    _run(instance, passed=True)
    _tick(alert_on_failed_checks, instance, again, alerting)
    assert [m["type"] for m in receiver.accepted] == ["failure", "success"]
    assert "RECOVERED" in receiver.accepted[1]["title"] and "2 repeats suppressed" in receiver.accepted[1]["message"]

    lines = journal.read(tmp_path / "alerts.jsonl")
    assert [ln["kind"] for ln in lines] == ["check_failed", "check_recovered"]
    for ln in lines:
        assert {"ts", "key", "kind", "severity", "title", "message", "delivery"} <= ln.keys()
        assert ln["key"] == "check:probe:probe_is_sane" and ln["severity"] == "ERROR"
        assert ln["delivery"] == {"ok": True, "attempts": 1, "error": None, "targets": 1}


def test_a_refused_first_delivery_arrives_on_retry(tmp_path: Path, receiver: Receiver) -> None:
    receiver.refuse = 1
    record = raise_alert("collector:spot", "ERROR", "spot collector silent", "no heartbeat for 5 minutes",
                         settings=_settings(tmp_path, receiver.url()))
    assert receiver.requests == 2 and len(receiver.accepted) == 1
    assert receiver.accepted[0]["message"] == "no heartbeat for 5 minutes"
    assert record["delivery"] == {"ok": True, "attempts": 2, "error": None, "targets": 1}


def test_a_receiver_that_is_down_is_recorded_as_not_delivered(tmp_path: Path, receiver: Receiver) -> None:
    """Through the run-failure sensor: one good and one dead target, so the failure names the dead one only."""
    instance = dg.DagsterInstance.ephemeral()
    dead = f"json://127.0.0.1:{_closed_port()}/hook"
    alerting = AlertDestinations(urls=f"{receiver.url()}, {dead}", data_dir=str(tmp_path), backoff_seconds=0.05)
    cursor = _tick(alert_on_run_failure, instance, None, alerting)
    _run(instance, crash=True)
    _tick(alert_on_run_failure, instance, cursor, alerting)

    [line] = journal.read(tmp_path / "alerts.jsonl")
    assert line["kind"] == "run_failure" and line["count"] == 1 and "probe crashed" in line["message"]
    assert line["delivery"]["ok"] is False and line["delivery"]["attempts"] == 3 and line["delivery"]["targets"] == 2
    assert str(dead.split(":")[2].split("/")[0]) in line["delivery"]["error"]
    assert len(receiver.accepted) == 1, "the live target got it once, not once per retry round"
    # `kalshi-shadow status` (a real process on the same data dir) tells a person the last alert was not delivered.
    proc = subprocess.run([sys.executable, "-m", "kalshi_shadow.cli", "status", "--json"], capture_output=True, text=True,
                          env={**os.environ, "KALSHI_SHADOW_DATA_DIR": str(tmp_path)}, timeout=60)
    status = json.loads(proc.stdout)
    assert status["alerts"]["last"]["delivered"] is False and proc.returncode != 0


def test_run_failures_of_one_job_are_rate_limited_and_counted(tmp_path: Path, receiver: Receiver) -> None:
    settings = _settings(tmp_path, receiver.url())
    t0 = datetime(2026, 7, 29, 4, tzinfo=timezone.utc)
    assert report_run_failure("live_job", "r1", "boom", settings=settings, now=t0)["count"] == 1
    assert report_run_failure("live_job", "r2", "boom", settings=settings, now=t0 + timedelta(minutes=1)) is None
    assert report_run_failure("live_job", "r3", "bang", settings=settings, now=t0 + timedelta(minutes=2)) is None
    assert report_run_failure("other_job", "r4", "x", settings=settings, now=t0 + timedelta(minutes=2)) is not None
    assert flush_run_failures(settings=settings, now=t0 + timedelta(minutes=30)) == []
    [summary] = flush_run_failures(settings=settings, now=t0 + timedelta(minutes=61))
    assert summary["count"] == 2 and summary["run_id"] == "r3" and "bang" in summary["message"]
    assert len(receiver.accepted) == 3


def test_raise_and_resolve_remind_after_the_interval_and_escalate(tmp_path: Path, receiver: Receiver) -> None:
    settings = _settings(tmp_path, receiver.url(), repeat=timedelta(minutes=60))
    t0 = datetime(2026, 7, 29, 4, tzinfo=timezone.utc)
    assert raise_alert("feed", "WARN", "feed slow", settings=settings, now=t0)["kind"] == "alert_failed"
    assert raise_alert("feed", "WARN", "feed slow", settings=settings, now=t0 + timedelta(minutes=10)) is None
    reminder = raise_alert("feed", "WARN", "feed slow", settings=settings, now=t0 + timedelta(minutes=61))
    assert reminder["kind"] == "alert_reminder" and reminder["suppressed"] == 1 and "degraded" in reminder["title"]
    escalated = raise_alert("feed", "ERROR", "feed down", settings=settings, now=t0 + timedelta(minutes=62))
    assert escalated["kind"] == "alert_failed" and escalated["since"] == t0.isoformat()
    assert resolve_alert("feed", settings=settings, now=t0 + timedelta(minutes=90))["kind"] == "alert_recovered"
    assert resolve_alert("feed", settings=settings, now=t0 + timedelta(minutes=91)) is None
    assert [m["type"] for m in receiver.accepted] == ["warning", "warning", "failure", "success"]


def test_without_urls_alerts_are_still_recorded(tmp_path: Path) -> None:
    record = raise_alert("k", "ERROR", "t", "b", settings=_settings(tmp_path))
    assert record["delivery"] == {"ok": None, "attempts": 0, "error": "not configured", "targets": 0}
    assert journal.read(tmp_path / "alerts.jsonl")[-1]["delivery"]["error"] == "not configured"


def test_settings_from_env_read_several_urls_and_the_repeat_interval(tmp_path: Path) -> None:
    env = {"KALSHI_SHADOW_DATA_DIR": str(tmp_path), "KALSHI_SHADOW_ALERT_URLS": "json://a/x, ntfy://topic\n mailto://u:p@h",
           "KALSHI_SHADOW_ALERT_REPEAT_MINUTES": "15"}
    s = AlertSettings.from_env(env)
    assert s.urls == ("json://a/x", "ntfy://topic", "mailto://u:p@h") and s.repeat == timedelta(minutes=15)
    assert s.journal_path == tmp_path.resolve() / "alerts.jsonl" and parse_urls("") == ()


def test_a_crash_loop_recorded_by_up_alerts_and_its_recovery_clears_it(tmp_path: Path, receiver: Receiver) -> None:
    from kalshi_shadow.defs.alerts import follow_restarts
    from kalshi_shadow.supervisor import RunDir

    run = RunDir(tmp_path)  # the supervisor's own writer of restarts.jsonl
    settings = _settings(tmp_path, receiver.url())
    now = datetime.now(timezone.utc)
    run.append({"ts": now.isoformat(), "kind": "exit", "child": "collect-spot", "exit_code": 1, "cause": "exit code 1"})
    offset = follow_restarts(run.restarts_path, 0, settings)
    assert receiver.accepted == []  # a single restart is recorded, not alerted
    run.append({"ts": (now + timedelta(seconds=5)).isoformat(), "kind": "crash_loop", "child": "collect-spot", "exits": 6,
                "cause": "exit code 1"})
    offset = follow_restarts(run.restarts_path, offset, settings)
    assert follow_restarts(run.restarts_path, offset, settings) == offset  # nothing new: nothing sent again
    run.append({"ts": (now + timedelta(minutes=3)).isoformat(), "kind": "crash_loop_recovered", "child": "collect-spot"})
    follow_restarts(run.restarts_path, offset, settings)
    assert [m["type"] for m in receiver.accepted] == ["failure", "success"]
    assert "collect-spot is crash-looping" in receiver.accepted[0]["title"] and "RECOVERED" in receiver.accepted[1]["title"]
