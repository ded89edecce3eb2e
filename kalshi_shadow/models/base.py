"""What a model is: a named, versioned, vectorised function from a snapshot's point-in-time inputs to P(YES).

Every input is what was known when the quote was *seen* (`pricing/snapshots.py` builds them), one numpy array per
field, one element per quote; a missing value is NaN (None in `strike_type`), never a default. A model returns one
probability per quote, NaN where it cannot price: the platform then stores NULL and the row drops out of its scores.
Rows the platform already judges unpriceable (no spot, stale inputs, closed...) are set to NULL whatever the model
returns, so a model never needs to repeat those rules.

A model that needs more than the row (a fit on past outcomes) may implement `prepare(conn, x)`, called in the
pricing transaction before `prob_yes` with the same inputs; it must read only what was known before each quote was
seen, so that a backfill reproduces the live rows. If it refits on a schedule, its `refit_seconds` makes pricing
split at every multiple of it, so the rows before a boundary are stored before any quote after it is priced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import duckdb
import numpy as np

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}-v[0-9]+$")  # e.g. avg60-v1: a new version is a new name


@dataclass(frozen=True)
class ModelInputs:
    """One chunk of quotes, point in time. Prices and strikes in dollars, times in seconds."""

    strike_type: np.ndarray   # object: greater, greater_or_equal, less, less_or_equal, between (None: unknown)
    floor: np.ndarray         # floor_strike
    cap: np.ndarray           # cap_strike
    spot: np.ndarray          # the index (official where fresh, else the venues' proxy) for the second it was seen
    vol: np.ndarray           # annualised EWMA vol of the index, that minute
    tau: np.ndarray           # seconds from the quote to the close
    window_mean: np.ndarray   # the settlement average so far, inside the last 60 s (NaN before the window)
    yes_bid: np.ndarray
    yes_ask: np.ndarray
    yes_bid_size: np.ndarray
    yes_ask_size: np.ndarray
    p_mid: np.ndarray         # (yes_bid + yes_ask) / 2, NaN when one-sided
    book_age: np.ndarray      # seconds since the top of this book last changed (NaN: unknown within the lookback)
    index_move: np.ndarray    # log(spot / the index when the book last changed): what the book has not seen
    seen_ts: np.ndarray       # epoch seconds the quote was seen
    series: np.ndarray        # object: the series ticker

    def __len__(self) -> int:
        return len(self.spot)


class Model:
    """Subclass (or duck-type) this: set `name` and `description`, implement `prob_yes`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    refit_seconds: int | None = None  # see the module docstring

    def prepare(self, conn: duckdb.DuckDBPyConnection, x: ModelInputs) -> None:
        """Read what the model needs from the warehouse before pricing this chunk (point in time). Optional."""

    def prob_yes(self, x: ModelInputs) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<model {self.name}>"
