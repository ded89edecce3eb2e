"""Standalone long-running collectors. They never import Dagster and never open the DuckDB warehouse:
they append raw Parquet micro-batches (kalshi_shadow.raw) and rewrite a JSON health record."""
