"""Alerts: deduplicated, rate-limited, with recoveries, delivered through Apprise to the URLs in
KALSHI_SHADOW_ALERT_URLS and always recorded in `<data_dir>/alerts.jsonl`.

Other code reports a lasting problem with `raise_alert(key, severity, title, body)` while it sees it and
`resolve_alert(key)` when it is gone; the Dagster sensors in `kalshi_shadow/defs/alerts.py` do the same for
asset checks and failed runs.
"""

from kalshi_shadow.alerts.notify import Delivery, deliver
from kalshi_shadow.alerts.policy import SEVERITY_MEANING, flush_run_failures, raise_alert, report_run_failure, resolve_alert
from kalshi_shadow.alerts.settings import AlertSettings, parse_urls

__all__ = ["AlertSettings", "Delivery", "SEVERITY_MEANING", "deliver", "flush_run_failures", "parse_urls",
           "raise_alert", "report_run_failure", "resolve_alert"]
