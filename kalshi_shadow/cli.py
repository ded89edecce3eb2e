"""`kalshi-shadow <command>`: a thin dispatcher; each command lives in the module that owns it.

Imports are lazy so that `kalshi-shadow collect-spot` never imports Dagster.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("kalshi_shadow.supervisor", "Start the simulator (without credentials), the collectors, Dagster webserver and daemon"),
    "sim": ("kalshi_shadow.sim.cli", "Run the local exchange simulator (Kalshi REST and WS, Coinbase, Kraken and Bitstamp WS) on 127.0.0.1"),
    "collect-spot": ("collectors.spot", "Coinbase WS -> raw spot_ticks"),
    "collect-kraken": ("collectors.kraken", "Kraken WS v2 -> raw kraken_trades"),
    "collect-bitstamp": ("collectors.bitstamp", "Bitstamp WS -> raw bitstamp_trades"),
    "collect-index": ("collectors.cfbenchmarks", "Kalshi WS cfbenchmarks_value (keyed) -> raw cfb_index_values: the official BRTI"),
    "collect-books": ("collectors.books", "Kalshi WS orderbook_delta + market_lifecycle_v2 (keyed) -> raw kalshi_quotes with depth, kalshi_lifecycle"),
    "collect-quotes": ("collectors.quotes", "Kalshi REST poller -> raw kalshi_markets / kalshi_quotes"),
    "status": ("kalshi_shadow.status", "Processes, collectors, table freshness, lag, failing checks, last alert; exit 1 when down"),
    "decisions": ("kalshi_shadow.decisions.cli", "The last would-trade decisions; per rule set open positions, bankroll, realised PnL"),
    "report": ("kalshi_shadow.reports.cli", "Print a daily (--date) or weekly (--week) report's headline tables and its HTML path"),
    "sql": ("kalshi_shadow.warehouse.readers", "Run one read-only query on the warehouse (opens the file only while it runs)"),
    "bench": ("kalshi_shadow.bench", "Benchmarks that print throughput and run times"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: kalshi-shadow <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`kalshi-shadow <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kalshi-shadow: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
