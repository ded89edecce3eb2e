"""kalshi-shadow: shadow trading for Kalshi's BTC markets.

This package must stay importable without Dagster: the collectors import the domain library
(`kalshi_shadow.kalshi`, `kalshi_shadow.raw`, `kalshi_shadow.config`) and must never pull Dagster in.
The Dagster code location lives in `kalshi_shadow.definitions`.

`kalshi_shadow.connect()` returns a warehouse reader for notebooks (`kalshi_shadow.warehouse.readers`); it is
resolved on first use, so `import kalshi_shadow` imports neither DuckDB nor Dagster.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "connect"]


def __getattr__(name: str) -> Any:
    # Lazy so that the collectors' `import kalshi_shadow` stays free of duckdb and polars.
    if name == "connect":
        from kalshi_shadow.warehouse.readers import connect

        globals()["connect"] = connect
        return connect
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
