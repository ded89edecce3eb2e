"""`kalshi-shadow decisions`: the last decisions, and each rule set's open positions, bankroll and realised PnL.

Reads the warehouse through `kalshi_shadow.connect()` (opened per query, read-only), so it never holds up the
pipeline.
"""

from __future__ import annotations

import argparse
import sys

import duckdb
import polars as pl

from kalshi_shadow.warehouse.connection import WarehouseLockedError
from kalshi_shadow.warehouse.readers import connect

SUMMARY_SQL = """
SELECT w.rule_set_version AS rule_set,
       count(*) FILTER (WHERE action = 'take') AS takes,
       count(*) FILTER (WHERE action = 'skip') AS skips_logged,
       count(*) FILTER (WHERE action = 'take' AND outcome IS NULL) AS open_positions,
       round(coalesce(sum(cost) FILTER (WHERE action = 'take' AND outcome IS NULL), 0), 2) AS open_exposure,
       count(*) FILTER (WHERE action = 'take' AND outcome IS NOT NULL) AS settled,
       round(coalesce(sum(realised_pnl), 0), 2) AS realised_pnl,
       round(sum(ev_per_contract * contracts) FILTER (WHERE action = 'take' AND outcome IS NOT NULL), 2) AS predicted_ev_of_settled,
       -- before a set's first take its cash is the starting bankroll every row carries
       round(coalesce(b.cash, arg_min(bankroll_before, decided_ts)), 2) AS cash_now,
       round(coalesce(b.equity_at_cost, arg_min(bankroll_before, decided_ts)), 2) AS equity_at_cost
FROM kalshi_would_trades AS w
LEFT JOIN (SELECT rule_set_version, arg_max(cash, step) AS cash, arg_max(equity_at_cost, step) AS equity_at_cost
           FROM kalshi_bankroll GROUP BY 1) AS b USING (rule_set_version)
WHERE $rule_set = '' OR w.rule_set = $rule_set
GROUP BY w.rule_set_version, b.cash, b.equity_at_cost ORDER BY 1
"""

RECENT_SQL = """
SELECT decided_ts, rule_set, ticker, action, coalesce(reason, '') AS reason, side, ask, contracts,
       round(ev_per_contract, 4) AS ev, round(cost, 2) AS cost, round(bankroll_before, 2) AS bankroll_before,
       outcome, round(realised_pnl, 2) AS realised_pnl
FROM kalshi_would_trades
WHERE ($rule_set = '' OR rule_set = $rule_set) AND ($takes_only = false OR action = 'take')
ORDER BY decided_ts DESC, rule_set, ticker LIMIT $n
"""

OPEN_SQL = """
SELECT rule_set, ticker, side, contracts, ask, round(cost, 2) AS cost, decided_ts, round(ev_per_contract, 4) AS ev
FROM kalshi_open_positions WHERE $rule_set = '' OR rule_set = $rule_set ORDER BY rule_set, decided_ts
"""


def _print(title: str, frame: pl.DataFrame) -> None:
    print(f"\n{title}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, fmt_str_lengths=60, tbl_hide_dataframe_shape=True):
        print(frame if frame.height else "(none)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow decisions",
                                 description="The decision log: the last N decisions, and per rule set its open positions, "
                                             "bankroll and realised PnL. Shadow only: nothing was ever sent.")
    ap.add_argument("-n", type=int, default=20, help="how many recent decisions to print (default 20)")
    ap.add_argument("--rule-set", default="", help="only this rule set (by name)")
    ap.add_argument("--takes", action="store_true", help="recent takes only (skips are logged when a contract's reason changes)")
    ap.add_argument("--open", action="store_true", help="also list every open position")
    args = ap.parse_args(argv)
    try:
        wh = connect()
        params = {"rule_set": args.rule_set}
        _print("Rule sets (cash: start - costs + payouts read; equity at cost adds open positions)", wh.sql(SUMMARY_SQL, params))
        _print(f"Last {args.n} {'takes' if args.takes else 'decisions'}",
               wh.sql(RECENT_SQL, {**params, "n": args.n, "takes_only": args.takes}))
        if args.open:
            _print("Open positions", wh.sql(OPEN_SQL, params))
    except (WarehouseLockedError, FileNotFoundError, duckdb.Error) as exc:
        print(f"kalshi-shadow decisions: {exc}", file=sys.stderr)
        return 1
    return 0
