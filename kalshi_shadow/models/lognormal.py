"""The two models the platform began with, on the lognormal settlement law of `pricing/probability.py`."""

from __future__ import annotations

import numpy as np

from kalshi_shadow.models.base import Model, ModelInputs
from kalshi_shadow.pricing.probability import CHALLENGER, CHAMPION, prob_yes


class Avg60(Model):
    name = CHAMPION
    description = "Lognormal law of the 60-s settlement average; inside the window the elapsed part is realised."

    def prob_yes(self, x: ModelInputs) -> np.ndarray:
        return prob_yes(x.strike_type, x.floor, x.cap, x.spot, x.vol, x.tau, model=CHAMPION, window_mean=x.window_mean)


class SpotAtClose(Model):
    name = CHALLENGER
    description = "Lognormal law of the index at the close (ignores the averaging window)."

    def prob_yes(self, x: ModelInputs) -> np.ndarray:
        return prob_yes(x.strike_type, x.floor, x.cap, x.spot, x.vol, x.tau, model=CHALLENGER)
