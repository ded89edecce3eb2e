"""How many contracts a take buys: fractional Kelly on the model's probability and the ask, with the order's fee
in the arithmetic, then every cap.

Buying a contract at all-in cost c (ask plus fee per contract) that pays $1 with probability p, the Kelly stake is
f* = (p - c) / (1 - c) of the bankroll. The fee is per order and rounded up to the cent, so c depends on the size:
the size is found with the fee of that size, and trimmed until its real cost fits every cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from kalshi_shadow.decisions import rules
from kalshi_shadow.decisions.rulesets import RuleSet
from kalshi_shadow.pricing.fees import order_fee


@dataclass(frozen=True)
class Size:
    contracts: int
    fee: float
    cost: float
    blocked_by: str | None  # the reason when contracts == 0


def order_cost(ask: Decimal, n: int, fee_type: str, fee_multiplier: float) -> tuple[float, float]:
    """(fee, cost) of one order of n contracts at `ask`: the fee as Kalshi charges it (per order, rounded up)."""
    fee = order_fee(ask, n, fee_type, fee_multiplier)
    if fee is None:
        raise ValueError(f"fee type {fee_type!r} unknown: no size without a fee")
    return float(fee), float(ask) * n + float(fee)


def size_take(rs: RuleSet, *, p: float, ask: Decimal, ask_size: float, fee_type: str, fee_multiplier: float,
              cash: float, event_stake: float) -> Size:
    """The contracts to take, never more than the ask shows or any cap allows; 0 with the binding reason."""
    a = float(ask)
    budget = min(cash, rs.max_stake_per_trade, rs.max_stake_per_event - event_stake)
    if rs.max_stake_per_event - event_stake < a:
        return Size(0, 0.0, 0.0, rules.EVENT_STAKE_CAP)
    if cash < a:
        return Size(0, 0.0, 0.0, rules.BANKROLL)

    def kelly_stake(c: float) -> float:  # dollars to stake at all-in cost c per contract
        return rs.kelly_fraction * max(p - c, 0.0) / (1.0 - c) * cash if c < 1 else 0.0

    # First guess at the cost per contract of the size Kelly suggests before fees, then trimmed until the order's
    # real cost (its own rounded fee) fits the budget and the Kelly stake at that cost.
    n_guess = max(1, math.floor(kelly_stake(a) / a)) if a < 1 else 1
    c = order_cost(ask, n_guess, fee_type, fee_multiplier)[1] / n_guess
    n = min(math.floor(min(kelly_stake(c), budget) / c), math.floor(ask_size), rs.max_contracts_per_trade)
    while n > 0:
        cost = order_cost(ask, n, fee_type, fee_multiplier)[1]
        if cost <= budget and cost <= kelly_stake(cost / n) * (1 + 1e-12):
            break
        n -= 1
    if n <= 0:
        blocked = rules.NO_KELLY_SIZE if kelly_stake(c) < budget else (rules.BANKROLL if budget == cash else rules.EVENT_STAKE_CAP)
        return Size(0, 0.0, 0.0, blocked)
    fee, cost = order_cost(ask, n, fee_type, fee_multiplier)
    return Size(n, fee, cost, None)
