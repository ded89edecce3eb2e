"""Delivery of one message to every configured Apprise URL, retried, with a result that says what happened.

Apprise (one URL syntax for Slack, Telegram, email, ntfy, webhooks and ~100 more) does the sending; this module
adds what an alerting path needs around it: a few attempts with a short backoff per target, and an outcome that
is recorded rather than lost (`Delivery`), with target URLs shown in Apprise's privacy form so no token is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Sequence

log = logging.getLogger("kalshi_shadow.alerts")

# Apprise notify types by our severities: the colour/icon a chat app shows.
NOTIFY_TYPES = {"ERROR": "failure", "WARN": "warning", "OK": "success", "INFO": "info"}


@dataclass(frozen=True)
class Delivery:
    """ok: every target accepted the message (None: no target configured). attempts: rounds used (a failed target
    is retried alone). error: the last error per failed target. targets: how many URLs were configured."""

    ok: bool | None
    attempts: int
    error: str | None
    targets: int

    def as_dict(self) -> dict:
        return asdict(self)


NOT_CONFIGURED = Delivery(ok=None, attempts=0, error="not configured", targets=0)


def _label(server) -> str:
    return server.url(privacy=True).split("?", 1)[0]


def deliver(urls: Sequence[str], title: str, body: str, severity: str = "ERROR", *, attempts: int = 3,
            backoff_seconds: Sequence[float] = (1.0, 3.0)) -> Delivery:
    """Send to every URL; retry the ones that failed up to `attempts` rounds in all; never raises."""
    if not urls:
        return NOT_CONFIGURED
    import apprise  # imported here: the code location loads faster, and only alerting needs it

    errors: dict[str, str] = {}
    pending = []
    for i, url in enumerate(urls):
        target = apprise.Apprise()
        if target.add(url):
            pending.append((_label(target[0]), target))
        else:  # a malformed or unknown URL cannot succeed on retry
            errors[f"url #{i + 1}"] = "not a valid Apprise URL"
    rounds = 0
    while pending and rounds < max(1, attempts):
        if rounds:
            time.sleep(backoff_seconds[min(rounds - 1, len(backoff_seconds) - 1)] if backoff_seconds else 0)
        rounds += 1
        failed = []
        for label, target in pending:
            with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
                try:
                    sent = bool(target.notify(body=body, title=title, notify_type=NOTIFY_TYPES.get(severity, "info")))
                except Exception as exc:  # a plugin bug must not lose the alert record
                    sent, captured_error = False, f"{type(exc).__name__}: {exc}"
                else:
                    captured_error = None
                lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
            if sent:
                errors.pop(label, None)
            else:
                errors[label] = captured_error or (lines[-1] if lines else "delivery failed")
                failed.append((label, target))
        pending = failed
    error = "; ".join(f"{label}: {err}" for label, err in errors.items()) or None
    result = Delivery(ok=not errors, attempts=rounds, error=error, targets=len(urls))
    if not result.ok:
        log.error("alert %r not delivered after %d attempt(s): %s", title, rounds, error)
    return result
