"""When an alert is sent: once when a problem starts, a reminder at most every repeat interval while it lasts,
once when it ends; a failing job at most once per interval, with a count of the failures held back.

Every decision is taken under the state lock and written to the journal together with its delivery result, so
two callers never both send the same alert and a delivery that failed is on record (and logged at ERROR).
"""

from __future__ import annotations

from datetime import datetime, timezone

from kalshi_shadow.alerts import journal
from kalshi_shadow.alerts.notify import deliver
from kalshi_shadow.alerts.settings import AlertSettings
from kalshi_shadow.alerts.state import locked_state

# What a check severity means for this platform: an ERROR check means the numbers are missing or wrong.
SEVERITY_MEANING = {"ERROR": "blind or wrong", "WARN": "degraded"}
_RANK = {"WARN": 1, "ERROR": 2}


def _severity(value) -> str:
    s = str(getattr(value, "value", value)).upper()
    return "WARN" if s.startswith("WARN") else "ERROR"


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc)


def _settings(settings: AlertSettings | None) -> AlertSettings:
    return settings if settings is not None else AlertSettings.from_env()


def _send(settings: AlertSettings, *, key: str, kind: str, severity: str, title: str, message: str, **extra) -> dict:
    message = message or title  # Apprise refuses an empty body
    delivery = deliver(settings.urls, title, message, severity if not kind.endswith("_recovered") else "OK",
                       attempts=settings.attempts, backoff_seconds=settings.backoff_seconds)
    return journal.append(settings.journal_path, {"key": key, "kind": kind, "severity": severity, "title": title,
                                                  "message": message, "delivery": delivery.as_dict(), **extra})


def raise_alert(key: str, severity, title: str, body: str = "", *, kind: str = "alert", details: dict | None = None,
                settings: AlertSettings | None = None, now: datetime | None = None) -> dict | None:
    """Report that problem `key` is present now. Sent when it starts (kind `<kind>_failed`), when it gets worse
    (WARN -> ERROR), or as a reminder (`<kind>_reminder`) once the repeat interval has passed since the last
    message; otherwise counted as suppressed. Returns the journal line written, or None when suppressed."""
    settings, now, sev = _settings(settings), _now(now), _severity(severity)
    with locked_state(settings.state_path) as alerts:
        entry = alerts.get(key)
        firing = entry is not None and entry.get("status") == "firing"
        if firing:
            last_sent = datetime.fromisoformat(entry["last_sent"])
            worse = _RANK[sev] > _RANK.get(entry.get("severity"), 0)
            if not worse and now - last_sent < settings.repeat:
                entry["suppressed"] = entry.get("suppressed", 0) + 1
                entry["last_seen"] = now.isoformat()
                return None
        label = f"[{sev}: {SEVERITY_MEANING[sev]}] {title}"
        if firing and not worse:
            message = f"Still failing since {entry['since']} ({entry.get('suppressed', 0)} repeats suppressed).\n{body}"
            record = _send(settings, key=key, kind=f"{kind}_reminder", severity=sev, title=label, message=message,
                           since=entry["since"], suppressed=entry.get("suppressed", 0), details=details)
        else:
            record = _send(settings, key=key, kind=f"{kind}_failed", severity=sev, title=label, message=body,
                           since=entry["since"] if firing else now.isoformat(), details=details)
        alerts[key] = {"status": "firing", "kind": kind, "severity": sev, "title": title,
                       "since": entry["since"] if firing else now.isoformat(), "last_sent": now.isoformat(),
                       "last_seen": now.isoformat(), "suppressed": 0, "last_delivery_ok": record["delivery"]["ok"]}
        return record


def resolve_alert(key: str, body: str = "", *, title: str | None = None, details: dict | None = None,
                  settings: AlertSettings | None = None, now: datetime | None = None) -> dict | None:
    """Report that problem `key` is gone. Sends `<kind>_recovered` if it was firing; otherwise does nothing."""
    settings, now = _settings(settings), _now(now)
    with locked_state(settings.state_path) as alerts:
        entry = alerts.get(key)
        if entry is None or entry.get("status") != "firing":
            return None
        since = datetime.fromisoformat(entry["since"])
        message = (f"Recovered after {str(now - since).split('.')[0]} (failing since {entry['since']}; "
                   f"{entry.get('suppressed', 0)} repeats suppressed since the last message).\n{body}").rstrip()
        record = _send(settings, key=key, kind=f"{entry.get('kind', 'alert')}_recovered", severity=entry["severity"],
                       title=f"[RECOVERED] {title or entry['title']}", message=message, since=entry["since"],
                       suppressed=entry.get("suppressed", 0), details=details)
        alerts[key] = {**entry, "status": "ok", "resolved": now.isoformat(), "last_sent": now.isoformat(),
                       "suppressed": 0, "last_delivery_ok": record["delivery"]["ok"]}
        return record


def report_run_failure(job: str, run_id: str, error: str, *, settings: AlertSettings | None = None,
                       now: datetime | None = None) -> dict | None:
    """A failed run of `job`: sent unless the same job's last alert is younger than the repeat interval, in which
    case it is counted and summarised later (`flush_run_failures`). Returns the journal line, or None."""
    settings, now = _settings(settings), _now(now)
    key = f"run_failure:{job}"
    with locked_state(settings.state_path) as alerts:
        entry = alerts.get(key)
        if entry is not None and now - datetime.fromisoformat(entry["last_sent"]) < settings.repeat:
            entry["suppressed"] = entry.get("suppressed", 0) + 1
            entry["last_run_id"], entry["last_error"] = run_id, error[:2000]
            return None
        record = _send(settings, key=key, kind="run_failure", severity="ERROR",
                       title=f"[ERROR: {SEVERITY_MEANING['ERROR']}] run of {job} failed", message=f"run {run_id}: {error}",
                       job=job, run_id=run_id, count=1)
        alerts[key] = {"status": "sent", "kind": "run_failure", "job": job, "last_sent": now.isoformat(),
                       "suppressed": 0, "last_delivery_ok": record["delivery"]["ok"]}
        return record


def flush_run_failures(*, settings: AlertSettings | None = None, now: datetime | None = None) -> list[dict]:
    """One summary per job whose held-back failures are older than the repeat interval: none goes untold."""
    settings, now = _settings(settings), _now(now)
    records = []
    with locked_state(settings.state_path) as alerts:
        for key, entry in alerts.items():
            n = entry.get("suppressed", 0)
            if entry.get("kind") != "run_failure" or not n or now - datetime.fromisoformat(entry["last_sent"]) < settings.repeat:
                continue
            job = entry["job"]
            record = _send(settings, key=key, kind="run_failure", severity="ERROR",
                           title=f"[ERROR: {SEVERITY_MEANING['ERROR']}] {n} more failed run(s) of {job}",
                           message=f"{n} more run(s) of {job} failed since {entry['last_sent']}; last, run "
                                   f"{entry.get('last_run_id')}: {entry.get('last_error', '')}",
                           job=job, run_id=entry.get("last_run_id"), count=n)
            entry.update(last_sent=now.isoformat(), suppressed=0, last_delivery_ok=record["delivery"]["ok"])
            records.append(record)
    return records
