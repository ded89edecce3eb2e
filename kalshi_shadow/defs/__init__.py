"""Dagster definitions, one module per domain; `kalshi_shadow.definitions` merges them."""
