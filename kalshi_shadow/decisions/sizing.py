"""How many contracts a take buys: fractional Kelly on the model's probability and the price it would pay, with the
order's fee in the arithmetic, then every cap.

Buying a contract at all-in cost c (price plus fee per contract) that pays $1 with probability p, the Kelly stake is
f* = (p - c) / (1 - c) of the bankroll. The fee is per order and rounded up to the cent, so c depends on the size:
the size is found with the fee of that size, and trimmed until its real cost fits every cap.

**Walking the book.** With depth (the book stream), an order of n contracts takes the ask levels in price order: it
pays each level's price for what it takes there, at the volume-weighted price (VWAP) over all, and its fee is the
per-order fee on that VWAP. It never buys more than the levels held. Without depth the book is one level: the ask
and the size shown there, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from kalshi_shadow.decisions import rules
from kalshi_shadow.decisions.rulesets import RuleSet
from kalshi_shadow.pricing.fees import order_fee


Level = tuple[Decimal, float]  # (ask price, contracts offered there)


@dataclass(frozen=True)
class Size:
    contracts: int
    fee: float
    cost: float
    blocked_by: str | None  # the reason when contracts == 0
    avg_price: float | None = None  # the VWAP paid
    levels_used: tuple[tuple[float, int, float], ...] = ()  # (price, contracts taken, contracts offered) per level


def walk(levels: list[Level], n: int) -> tuple[Decimal, tuple[tuple[float, int, float], ...]]:
    """(VWAP, levels used) of buying n contracts up the ask levels (ascending); n must not exceed what they hold."""
    left, paid, used = n, Decimal(0), []
    for price, size in levels:
        k = min(left, int(size))
        if k <= 0:
            continue
        paid += price * k
        used.append((float(price), k, float(size)))
        left -= k
        if left == 0:
            break
    if left:
        raise ValueError(f"{n} contracts exceed the {n - left} the levels hold")
    return paid / n, tuple(used)


def order_cost(levels: list[Level], n: int, fee_type: str, fee_multiplier: float) -> tuple[float, float]:
    """(fee, cost) of one order of n contracts walking `levels`: the fee as Kalshi charges it (per order, rounded up)
    on the order's VWAP, plus what each level's contracts cost."""
    vwap, _ = walk(levels, n)
    fee = order_fee(vwap, n, fee_type, fee_multiplier)
    if fee is None:
        raise ValueError(f"fee type {fee_type!r} unknown: no size without a fee")
    return float(fee), float(vwap * n) + float(fee)


def size_take(rs: RuleSet, *, p: float, ask: Decimal, ask_size: float, fee_type: str, fee_multiplier: float,
              cash: float, event_stake: float, levels: list[Level] | None = None) -> Size:
    """The contracts to take, never more than the book holds (`levels`, ascending asks; else the ask and its size)
    or any cap allows; 0 with the binding reason."""
    levels = sorted(levels) if levels else [(ask, ask_size)]
    a = float(levels[0][0])
    held = sum(int(size) for _, size in levels)
    budget = min(cash, rs.max_stake_per_trade, rs.max_stake_per_event - event_stake)
    if rs.max_stake_per_event - event_stake < a:
        return Size(0, 0.0, 0.0, rules.EVENT_STAKE_CAP)
    if cash < a:
        return Size(0, 0.0, 0.0, rules.BANKROLL)

    def kelly_stake(c: float) -> float:  # dollars to stake at all-in cost c per contract
        return rs.kelly_fraction * max(p - c, 0.0) / (1.0 - c) * cash if c < 1 else 0.0

    # First guess at the cost per contract of the size Kelly suggests before fees, then trimmed until the order's
    # real cost (its own rounded fee) fits the budget and the Kelly stake at that cost.
    if held < 1:
        return Size(0, 0.0, 0.0, rules.NO_KELLY_SIZE)
    n_guess = min(max(1, math.floor(kelly_stake(a) / a)) if a < 1 else 1, held)
    c = order_cost(levels, n_guess, fee_type, fee_multiplier)[1] / n_guess
    n = min(math.floor(min(kelly_stake(c), budget) / c), held, rs.max_contracts_per_trade)
    while n > 0:
        cost = order_cost(levels, n, fee_type, fee_multiplier)[1]
        if cost <= budget and cost <= kelly_stake(cost / n) * (1 + 1e-12):
            break
        n -= 1
    if n <= 0:
        blocked = rules.NO_KELLY_SIZE if kelly_stake(c) < budget else (rules.BANKROLL if budget == cash else rules.EVENT_STAKE_CAP)
        return Size(0, 0.0, 0.0, blocked)
    fee, cost = order_cost(levels, n, fee_type, fee_multiplier)
    vwap, used = walk(levels, n)
    return Size(n, fee, cost, None, float(vwap), used)
