"""`kalshi-shadow report --date YYYY-MM-DD | --week YYYY-Www`: print the headline tables and the HTML path.

Builds the report if it is missing (or with --rebuild), reading the warehouse read-only, one query at a time
(`warehouse.readers`), so the pipeline is never held up for long.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

from kalshi_shadow.reports.build import build, report_dir, write_html
from kalshi_shadow.reports.data import Period, collect


def render(period: Period, *, data_dir: Path, db_path: Path | None = None, rebuild: bool = False) -> tuple[Path, str]:
    """(path of index.html, headline text), building the report when missing or asked to."""
    from kalshi_shadow.warehouse.readers import connect

    out = report_dir(data_dir, period)
    index, head = out / "index.html", out / "headline.txt"
    if rebuild or not index.exists() or not head.exists():
        report = build(collect(connect(db_path).sql, period))
        write_html(report, out)
    return index, head.read_text()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow report", description="Print a daily or weekly evaluation report's "
                                 "headline tables and the path of its HTML file (built if missing).")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--date", help="UTC day, YYYY-MM-DD")
    which.add_argument("--week", help="ISO week, YYYY-Www (e.g. 2026-W23)")
    ap.add_argument("--rebuild", action="store_true", help="build again even if the HTML exists")
    args = ap.parse_args(argv)
    from kalshi_shadow.config import Settings
    from kalshi_shadow.warehouse.connection import WarehouseLockedError

    try:
        period = Period.day(args.date) if args.date else Period.week(args.week)
    except (ValueError, TypeError):
        print(f"kalshi-shadow report: not a date or ISO week: {args.date or args.week!r}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        path, text = render(period, data_dir=settings.data_dir, db_path=settings.db_path, rebuild=args.rebuild)
    except (WarehouseLockedError, FileNotFoundError, duckdb.Error, ValueError) as exc:
        print(f"kalshi-shadow report: {exc}", file=sys.stderr)
        return 1
    print(text)
    print(f"\nHTML: {path}")
    return 0
