"""Health and selection filters: every failed rule becomes a reason on the snapshot, never a silent drop.

Changing a threshold changes `RULES_VERSION`, which each snapshot records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kalshi_shadow.config import env_number


@dataclass(frozen=True)
class Rules:
    max_spot_age_seconds: float = 30.0     # spot_stale
    max_quote_age_seconds: float = 15.0    # quote_stale
    max_vol_gap_seconds: float = 120.0     # vol_gap: the vol grid point spans a silence of the spot feed longer than this
    max_spread: float = 0.10               # spread_wide (yes_ask - yes_bid, dollars)
    max_tau_seconds: float = 26 * 3600.0   # too_far_from_close
    min_p: float = 0.02                    # deep_out_of_money / deep_in_money: p_model outside [min_p, 1 - min_p]
    min_ev: float = 0.01                   # no_edge: neither side's EV (dollars per contract, after fees) reaches this

    @property
    def version(self) -> str:
        return "rules-v1:" + ",".join(f"{k}={v:g}" for k, v in asdict(self).items())


RULES = Rules()


def lot_size() -> int:
    """Contracts per hypothetical order; fees are per order, so this changes fees per contract."""
    return env_number("KALSHI_SHADOW_LOT_SIZE", 100, minimum=1, integer=True)
