"""Alerts from Dagster: failed and recovered asset checks, failed runs (policy and delivery in `kalshi_shadow/alerts`).

Each sensor follows one kind of event from a cursor holding the last storage id it handled, not a timestamp:
storage ids are unique and increase, so an event is neither skipped nor handled twice, however many land in the
same second. A new sensor (or an old timestamp cursor) starts at the newest event, so history is not re-sent.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import dagster as dg

from kalshi_shadow.alerts import AlertSettings, flush_run_failures, raise_alert, report_run_failure, resolve_alert

BATCH = 200  # events per query
# How often each alert sensor looks (each look is a call into the code location: CPU on a small box). A failed check
# reaches a person within a minute of its evaluation.
ALERT_TICK_SECONDS = 60
BUDGET_SECONDS = 40.0  # stop early (cursor at the last event handled) well inside Dagster's 60 s sensor timeout


class AlertDestinations(dg.ConfigurableResource):
    """Where alerts go. Unset fields are read from the environment when an alert is sent (KALSHI_SHADOW_ALERT_URLS,
    KALSHI_SHADOW_ALERT_REPEAT_MINUTES, KALSHI_SHADOW_DATA_DIR), so URL tokens never show in the Dagster UI."""

    urls: str | None = None
    data_dir: str | None = None
    repeat_minutes: float | None = None
    backoff_seconds: float | None = None

    def settings(self) -> AlertSettings:
        from datetime import timedelta
        from pathlib import Path

        from kalshi_shadow.alerts import parse_urls

        return AlertSettings.from_env(
            urls=parse_urls(self.urls) if self.urls is not None else None,
            data_dir=Path(self.data_dir) if self.data_dir is not None else None,
            repeat=timedelta(minutes=self.repeat_minutes) if self.repeat_minutes is not None else None,
            backoff_seconds=(self.backoff_seconds,) if self.backoff_seconds is not None else None)


def _storage_id(cursor: str | None) -> int | None:
    return int(cursor) if cursor and cursor.isdigit() else None


def _check_records(instance: dg.DagsterInstance, after: int | None, limit: int, ascending: bool = True):
    return instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after), limit, ascending)


def _run_failure_records(instance: dg.DagsterInstance, after: int | None, limit: int, ascending: bool = True):
    return instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=after),
        limit=limit, ascending=ascending).records


def _follow(context: dg.SensorEvaluationContext, fetch, handle) -> dg.SkipReason:
    """Hand each event after the cursor to `handle` in storage order, moving the cursor past each one."""
    after = _storage_id(context.cursor)
    if after is None:
        newest = fetch(context.instance, None, 1, ascending=False)
        context.update_cursor(str(newest[0].storage_id if newest else 0))
        return dg.SkipReason("started at the newest event")
    started, handled = time.monotonic(), 0
    while time.monotonic() - started < BUDGET_SECONDS:
        records = fetch(context.instance, after, BATCH)
        for rec in records:
            handle(rec)
            after, handled = rec.storage_id, handled + 1
            context.update_cursor(str(after))
            if time.monotonic() - started >= BUDGET_SECONDS:
                break
        if len(records) < BATCH:
            break
    return dg.SkipReason(f"{handled} new event(s) handled")


def _log_outcome(context: dg.SensorEvaluationContext, record: dict | None) -> None:
    if record is None:
        return
    d = record["delivery"]
    if d["ok"] is False:
        context.log.error(f"{record['kind']} {record['key']}: delivery FAILED after {d['attempts']} attempt(s): {d['error']}")
    else:
        context.log.info(f"{record['kind']} {record['key']}: {record['title']} (delivered: {d['ok']})")


def _at(rec) -> datetime:
    return datetime.fromtimestamp(rec.timestamp, timezone.utc)


@dg.sensor(name="alert_on_failed_checks", minimum_interval_seconds=ALERT_TICK_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Alerts when a data check starts failing (ERROR: blind or wrong; WARN: degraded), reminds "
                       "while it keeps failing, and says when it passes again.")
def alert_on_failed_checks(context: dg.SensorEvaluationContext, alerting: AlertDestinations) -> dg.SkipReason:
    settings = alerting.settings()

    def handle(rec) -> None:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        asset, check = ev.asset_key.to_user_string(), ev.check_name
        key = f"check:{asset}:{check}"
        if ev.passed:
            _log_outcome(context, resolve_alert(key, f"{asset} {check} passed in run {rec.run_id}.",
                                                settings=settings, now=_at(rec)))
            return
        meta = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
        body = "\n".join(filter(None, [
            f"Check {check} on {asset} failed in run {rec.run_id}.", getattr(ev, "description", None),
            ", ".join(f"{k}={v}" for k, v in meta.items())]))
        _log_outcome(context, raise_alert(key, ev.severity, f"{asset} {check} failed", body, kind="check",
                                          details={"asset": asset, "check": check, "run_id": rec.run_id,
                                                   "metadata": {k: str(v) for k, v in meta.items()}},
                                          settings=settings, now=_at(rec)))

    return _follow(context, _check_records, handle)


def _step_errors(instance: dg.DagsterInstance, run_id: str, most: int = 3) -> list[str]:
    """The failed steps' own errors ("RuntimeError: ..."): the run failure message only names the steps."""
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)[:most]:
        error = getattr(entry.dagster_event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:  # the op's own exception, not Dagster's wrapper
            error = error.cause
        if error is not None:
            out.append(f"{entry.step_key}: {error.cls_name}: {error.message.strip()[:500]}")
    return out


@dg.sensor(name="alert_on_run_failure", minimum_interval_seconds=ALERT_TICK_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Alerts on every failed run; the same job failing again within the repeat interval is "
                       "counted and summarised once the interval has passed.")
def alert_on_run_failure(context: dg.SensorEvaluationContext, alerting: AlertDestinations) -> dg.SkipReason:
    settings = alerting.settings()

    def handle(rec) -> None:
        entry = rec.event_log_entry
        message = (entry.dagster_event.message if entry.dagster_event else None) or entry.user_message or ""
        message = "\n".join([message, *_step_errors(context.instance, rec.run_id)])
        _log_outcome(context, report_run_failure(entry.job_name or "?", rec.run_id, message, settings=settings, now=_at(rec)))

    result = _follow(context, _run_failure_records, handle)
    for record in flush_run_failures(settings=settings):
        _log_outcome(context, record)
    return result


def follow_restarts(path, offset: int, settings: AlertSettings) -> int:
    """Alert on the supervisor's crash-loop records after byte `offset` of restarts.jsonl (and clear on recovery);
    returns the new offset. Only whole lines are read, so a line being written is read on the next tick."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        if offset > path.stat().st_size:  # a new file (a new data dir): start over
            offset = 0
        fh.seek(offset)
        for line in fh:
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            child, kind = rec.get("child", "?"), rec.get("kind")
            at = datetime.fromisoformat(rec["ts"]) if rec.get("ts") else None
            if kind == "crash_loop":
                raise_alert(f"crash_loop:{child}", "ERROR", f"{child} is crash-looping",
                            f"{child} exited {rec.get('exits', 'repeatedly')} times in a short while; `up` now restarts it "
                            f"only every few minutes. Last exit: {rec.get('cause') or rec.get('exit_code')}.",
                            kind="crash_loop", details=rec, settings=settings, now=at)
            elif kind == "crash_loop_recovered":
                resolve_alert(f"crash_loop:{child}", f"{child} has stayed up again.", settings=settings, now=at)
    return offset


@dg.sensor(name="alert_on_crash_loops", minimum_interval_seconds=ALERT_TICK_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Alerts when `kalshi-shadow up` finds a child crash-looping (run/restarts.jsonl), and when it recovers.")
def alert_on_crash_loops(context: dg.SensorEvaluationContext, alerting: AlertDestinations) -> dg.SkipReason:
    settings = alerting.settings()
    offset = int(context.cursor) if context.cursor and context.cursor.isdigit() else 0
    new = follow_restarts(settings.data_dir / "run" / "restarts.jsonl", offset, settings)
    context.update_cursor(str(new))
    return dg.SkipReason(f"read {new - offset} bytes of restart records")


defs = dg.Definitions(sensors=[alert_on_failed_checks, alert_on_run_failure, alert_on_crash_loops],
                      resources={"alerting": AlertDestinations()})
