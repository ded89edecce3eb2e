"""Kalshi trading fees, charged per order and rounded UP to the cent.

taker: ceil_to_cent(0.07 * m * C * P * (1 - P)); maker (only on `quadratic_with_maker_fees`):
ceil_to_cent(0.0175 * m * C * P * (1 - P)), m = the series' fee_multiplier. Computed in exact decimals: in floats
0.07 * 100 * 0.5 * 0.5 is 1.7500000000000002 and would round up to 1.76. The SQL macro is what the pipeline uses;
the Python function is the reference the tests hold it to. Unknown fee types (e.g. `flat`, whose formula is not
documented) give None: the snapshot records `fee_unknown` instead of guessing.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

TAKER_RATE = Decimal("0.07")
MAKER_RATE = Decimal("0.0175")
QUADRATIC_TYPES = ("quadratic", "quadratic_with_maker_fees")


def order_fee(price: Decimal, count: int | Decimal, fee_type: str | None, fee_multiplier: float | Decimal = 1, *, maker: bool = False) -> Decimal | None:
    """Fee in dollars for one order of `count` contracts at `price`; None when the fee type is unknown."""
    if fee_type not in QUADRATIC_TYPES:
        return None
    if maker and fee_type != "quadratic_with_maker_fees":
        return Decimal("0.00")
    rate = (MAKER_RATE if maker else TAKER_RATE) * Decimal(str(fee_multiplier))
    raw = rate * Decimal(count) * price * (1 - price)
    return (raw * 100).to_integral_value(rounding=ROUND_CEILING) / 100


# DuckDB: exact integer arithmetic in HUGEINT. With price in 1/10000 dollars (pb) and the multiplier in 1/10000
# (mb), the fee in cents is 7 * mb * n * pb * (10000 - pb) / 10^12, rounded up. Returns DOUBLE dollars per order.
FEE_MACRO_SQL = """
CREATE OR REPLACE MACRO kalshi_taker_fee(price, n, fee_type, fee_multiplier) AS
    CASE WHEN fee_type IN ('quadratic', 'quadratic_with_maker_fees') AND price IS NOT NULL THEN
        CAST((7 * CAST(round(fee_multiplier * 10000) AS HUGEINT) * CAST(n AS HUGEINT)
              * CAST(round(price * 10000) AS HUGEINT) * (10000 - CAST(round(price * 10000) AS HUGEINT))
              + 999999999999) // 1000000000000 AS DOUBLE) / 100
    END
"""
