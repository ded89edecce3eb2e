"""Daily and weekly evaluation reports: coverage, calibration on paired rows, edge quality, decisions, drift.

`data.py` fetches event-level aggregates in DuckDB, `stats.py` does the statistics in numpy, `charts.py` draws PNGs
with matplotlib (Agg), `build.py` puts them together as HTML and Dagster markdown, `cli.py` is `kalshi-shadow report`.
"""
