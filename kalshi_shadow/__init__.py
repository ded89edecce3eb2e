"""kalshi-shadow: shadow trading for Kalshi's BTC markets.

This package must stay importable without Dagster: the collectors import the domain library
(`kalshi_shadow.kalshi`, `kalshi_shadow.raw`, `kalshi_shadow.config`) and must never pull Dagster in.
The Dagster code location lives in `kalshi_shadow.definitions`.
"""

__version__ = "0.1.0"
