"""Where alerts go and how often a still-firing alert may repeat, read from the environment when they are sent.

Every function in this package also takes an `AlertSettings` explicitly, so tests and callers can aim elsewhere
without touching the process environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Mapping

from kalshi_shadow.config import env_number

URLS_VAR = "KALSHI_SHADOW_ALERT_URLS"
REPEAT_VAR = "KALSHI_SHADOW_ALERT_REPEAT_MINUTES"


def parse_urls(raw: str | None) -> tuple[str, ...]:
    """Apprise URLs separated by commas and/or whitespace (one setting can reach Slack, Telegram, email, ntfy...)."""
    return tuple(u for u in re.split(r"[,\s]+", raw or "") if u)


@dataclass(frozen=True)
class AlertSettings:
    data_dir: Path
    urls: tuple[str, ...] = ()
    repeat: timedelta = timedelta(minutes=60)
    attempts: int = 3
    backoff_seconds: tuple[float, ...] = (1.0, 3.0)

    @property
    def journal_path(self) -> Path:
        """Every alert, one JSON line each (`kalshi-shadow status` shows the last line's delivery)."""
        return self.data_dir / "alerts.jsonl"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "alerts_state.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "AlertSettings":
        from kalshi_shadow.config import Settings

        env = os.environ if env is None else env
        values = {
            "data_dir": Settings.from_env(env).data_dir,
            "urls": parse_urls(env.get(URLS_VAR)),
            "repeat": timedelta(minutes=env_number(REPEAT_VAR, 60.0, minimum=0.0, env=env)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
