"""Every reason a rule set skips a candidate, in one place, in the order they are checked.

Stateless rules look only at the snapshot and the rule set: they are SQL predicates over `c` (a candidate: the
snapshot with its chosen side) that are TRUE when the rule blocks, evaluated for every snapshot in one query. The
first that blocks is the skip's reason. Stateful rules need what was decided before (positions, caps, cool-downs,
cash): `engine.py` applies them in time order, in the order listed here.
"""

from __future__ import annotations

STATELESS: tuple[tuple[str, str], ...] = (
    ("series_not_allowed", "NOT list_contains($series, c.series_ticker)"),
    ("exchange_paused", "c.trading_active IS FALSE"),                 # /exchange/status: no trading (NULL: unknown)
    ("not_priced", "c.p_model IS NULL"),                               # stale or missing inputs: see snapshot reasons
    ("too_close_to_close", "c.tau_seconds < $min_tau_seconds"),
    ("too_far_from_close", "c.tau_seconds > $max_tau_seconds"),
    ("spot_stale", "c.spot_age_seconds > $max_spot_age_seconds"),
    ("quote_stale", "c.quote_age_seconds > $max_quote_age_seconds"),
    ("no_ask", "c.ask IS NULL"),
    ("one_sided_book", "c.yes_bid IS NULL OR c.yes_ask IS NULL"),
    ("spread_wide", "c.yes_ask - c.yes_bid > $max_spread"),
    ("ev_below_min", "c.ev_per_contract < $min_ev"),                   # after the fee per contract and the haircut
    ("ask_size_below_min", "coalesce(c.ask_size, 0) < $min_ask_size"),
)

# Checked in this order for candidates that pass every stateless rule.
COOLDOWN = "cooldown"                    # a take in the same event less than cooldown_seconds ago
EVENT_CAP = "event_cap"                  # max_positions_per_event takes in this event already
DAY_CAP = "day_cap"                      # max_takes_per_day takes this UTC day already
EVENT_STAKE_CAP = "event_stake_cap"      # the event's stake cap leaves no room for one contract
BANKROLL = "bankroll_exhausted"          # cash (open positions count against it) buys no contract
NO_KELLY_SIZE = "kelly_size_zero"        # fractional Kelly stakes less than one contract
EV_AFTER_ORDER_FEE = "ev_below_min"      # the fee of the sized order (rounded up to the cent) eats the edge
STATEFUL = (COOLDOWN, EVENT_CAP, DAY_CAP, EVENT_STAKE_CAP, BANKROLL, NO_KELLY_SIZE, EV_AFTER_ORDER_FEE)


def first_blocking_sql() -> str:
    """CASE expression naming the first stateless rule that blocks candidate `c` (NULL: none)."""
    return "CASE " + " ".join(f"WHEN {pred} THEN '{name}'" for name, pred in STATELESS) + " END"
