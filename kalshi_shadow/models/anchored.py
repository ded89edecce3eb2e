"""`anchored-v1`: start from the market, and move it by what the index did since the book last changed.

The mid is the best forecast there is, but a maker's book goes stale between updates while the index moves (spot
leads Kalshi's books by up to minutes). So this model takes the book's implied probability and moves it, in logit
space, by as much as the champion's settlement law moves for the same index move:

    logit p = logit p_mid + logit P(S_now) - logit P(S_then),   S_then = S_now * exp(-index_move)

with every other input (strike, vol, time to close, the window so far) as of now. When the index has not moved since
the book changed, the two law terms are equal and p is the mid (to rounding). A one-sided book has no mid: NaN.
"""

from __future__ import annotations

import numpy as np

from kalshi_shadow.models.base import Model, ModelInputs
from kalshi_shadow.pricing.probability import CHAMPION, prob_yes

EPS = 1e-9  # law probabilities are clipped this far from 0 and 1 before the logit


class MarketAnchored(Model):
    name = "anchored-v1"
    description = "The book's mid, moved in logit space by the champion law's response to the index move since the book last changed."

    def prob_yes(self, x: ModelInputs) -> np.ndarray:
        from scipy.special import expit, logit  # here: the Dagster processes that never price skip the import

        move = x.index_move  # NaN (the index then unknown): NaN, never a guess
        now = prob_yes(x.strike_type, x.floor, x.cap, x.spot, x.vol, x.tau, model=CHAMPION, window_mean=x.window_mean)
        then = prob_yes(x.strike_type, x.floor, x.cap, x.spot * np.exp(-move), x.vol, x.tau, model=CHAMPION,
                        window_mean=x.window_mean)
        shift = logit(np.clip(now, EPS, 1 - EPS)) - logit(np.clip(then, EPS, 1 - EPS))  # 0 when nothing moved
        return expit(logit(x.p_mid) + shift)
