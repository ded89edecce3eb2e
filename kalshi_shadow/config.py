"""Typed settings read from environment variables, with errors that name the variable.

Secrets (the Kalshi key id and private key path) only ever come from here; `Settings.__repr__` hides them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

DEFAULT_SERIES = ("KXBTC15M", "KXBTCD", "KXBTC")
KALSHI_PROD_URL = "https://external-api.kalshi.com/trade-api/v2"
COINBASE_WS_URL = "wss://ws-feed.exchange.coinbase.com"
KALSHI_WS_URL = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
KRAKEN_WS_URL = "wss://ws.kraken.com/v2"
BITSTAMP_WS_URL = "wss://ws.bitstamp.net"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return Path(raw).expanduser()


def _float(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    return value


def env_number(name: str, default: float, *, minimum: float | None = None, integer: bool = False,
               env: Mapping[str, str] | None = None) -> float:
    """A numeric setting read when it is used; a bad value is a ConfigError naming the variable."""
    env = os.environ if env is None else env
    value = _float(env, name, default, minimum)
    if integer:
        if value != int(value):
            raise ConfigError(f"{name}={env.get(name)!r} is not a whole number")
        return int(value)
    return value


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db_path: Path
    log_path: Path
    kalshi_base_url: str
    coinbase_ws_url: str
    series: tuple[str, ...]
    kalshi_api_key_id: str | None = field(default=None, repr=False)
    kalshi_private_key_path: Path | None = field(default=None, repr=False)
    quote_interval_seconds: float = 5.0
    kraken_ws_url: str = KRAKEN_WS_URL
    bitstamp_ws_url: str = BITSTAMP_WS_URL
    kalshi_ws_url: str = KALSHI_WS_URL
    book_depth: int = 3  # levels per side the book stream stores (KALSHI_SHADOW_BOOK_DEPTH; storage: BENCHMARKS.md)

    @property
    def raw_dir(self) -> Path:
        """Append-only raw files written by the collectors, read by the Dagster loaders."""
        return self.data_dir / "raw"

    @property
    def health_dir(self) -> Path:
        """One JSON health record per collector, rewritten atomically."""
        return self.data_dir / "health"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"

    @property
    def has_kalshi_credentials(self) -> bool:
        return self.kalshi_api_key_id is not None and self.kalshi_private_key_path is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = _path(env, "KALSHI_SHADOW_DATA_DIR", Path("data")).resolve()
        key_id = env.get("KALSHI_API_KEY_ID") or None
        key_path = _path(env, "KALSHI_PRIVATE_KEY_PATH", Path()) if env.get("KALSHI_PRIVATE_KEY_PATH") else None
        if (key_id is None) != (key_path is None):
            missing = "KALSHI_PRIVATE_KEY_PATH" if key_path is None else "KALSHI_API_KEY_ID"
            raise ConfigError(f"{missing} is not set: Kalshi credentials need both KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH")
        if key_path is not None and not key_path.is_file():
            raise ConfigError(f"KALSHI_PRIVATE_KEY_PATH={str(key_path)!r} is not a readable file")
        series_raw = env.get("KALSHI_SERIES") or ",".join(DEFAULT_SERIES)
        series = tuple(s.strip().upper() for s in series_raw.split(",") if s.strip())
        if not series:
            raise ConfigError(f"KALSHI_SERIES={series_raw!r} names no series")
        base_url = (env.get("KALSHI_BASE_URL") or KALSHI_PROD_URL).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"KALSHI_BASE_URL={base_url!r} must start with http:// or https://")
        ws_urls = {}
        for var, default in (("COINBASE_WS_URL", COINBASE_WS_URL), ("KRAKEN_WS_URL", KRAKEN_WS_URL), ("BITSTAMP_WS_URL", BITSTAMP_WS_URL),
                             ("KALSHI_WS_URL", KALSHI_WS_URL)):
            ws_urls[var] = env.get(var) or default
            if not ws_urls[var].startswith(("ws://", "wss://")):
                raise ConfigError(f"{var}={ws_urls[var]!r} must start with ws:// or wss://")
        return cls(
            data_dir=data_dir,
            db_path=_path(env, "DB_PATH", data_dir / "warehouse.duckdb").resolve(),
            log_path=_path(env, "LOG_PATH", data_dir / "logs").resolve(),
            kalshi_base_url=base_url,
            coinbase_ws_url=ws_urls["COINBASE_WS_URL"],
            kraken_ws_url=ws_urls["KRAKEN_WS_URL"],
            bitstamp_ws_url=ws_urls["BITSTAMP_WS_URL"],
            kalshi_ws_url=ws_urls["KALSHI_WS_URL"],
            series=series,
            kalshi_api_key_id=key_id,
            kalshi_private_key_path=key_path,
            quote_interval_seconds=_float(env, "KALSHI_QUOTE_INTERVAL_SECONDS", 5.0, minimum=0.2),
            book_depth=int(_float(env, "KALSHI_SHADOW_BOOK_DEPTH", 3, minimum=1)),
        )
