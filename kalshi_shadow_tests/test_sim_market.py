"""The simulator's market maker looks like a Kalshi book and, like the real one, forecasts better than the model.

Quotes are sampled from a real Exchange over hours of simulated history (`quote` is a pure function of the time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest

from kalshi_shadow.pricing.probability import CHAMPION, prob_yes
from kalshi_shadow.pricing.vol import LAMBDA, MINUTES_PER_YEAR, SEED_VOL, VOL_CAP, VOL_FLOOR, ewma
from kalshi_shadow.sim.clock import ManualClock
from kalshi_shadow.sim.exchange import FAST_LOOKBACK, MAKER_LEAD, Exchange, Market
from kalshi_shadow.sim.index import SECONDS_PER_YEAR, IndexPath

START = 1_785_297_600  # 2026-07-29 04:00Z, as the manual_sim fixture


@dataclass
class Row:
    m: Market
    t: int
    fair: float
    bid: Decimal | None
    ask: Decimal | None


def _exchange(seed: int, hours: int, fast: bool = False) -> Exchange:
    """An exchange whose clock stands `hours` after START, with every event since START generated."""
    return Exchange(ManualClock(START + hours * 3600), seed=seed, fast=fast, history_seconds=hours * 3600)


def _sample(x: Exchange, step: int) -> list[Row]:
    """Every active market's quote every `step` s (strike known), over the settled events since START."""
    rows = []
    for m in x.markets():
        if m.open_ts < START or m.close_ts > x.clock.now():
            continue
        for t in range(max(m.open_ts, m.strike_known_ts) + 1, m.close_ts, step):
            q = x.quote(m, t)
            rows.append(Row(m, t, x.fair_prob(m, t), q["yes_bid"], q["yes_ask"]))
    return rows


@pytest.fixture(scope="module")
def hourly() -> tuple[Exchange, list[Row]]:
    x = _exchange(7, 12)
    return x, _sample(x, 20)


def _spread(r: Row) -> float:
    return float(r.ask - r.bid)


def _near_money(r: Row) -> bool:
    return 0.2 < r.fair < 0.8


def test_prices_sit_on_the_cent_grid_and_bid_below_ask(hourly: tuple[Exchange, list[Row]]) -> None:
    _, rows = hourly
    prices = [p for r in rows for p in (r.bid, r.ask) if p is not None]
    assert len(prices) > 10_000
    assert all(Decimal("0.01") <= p <= Decimal("0.99") and p == p.quantize(Decimal("0.01")) for p in prices)
    assert all(r.bid < r.ask for r in rows if r.bid is not None and r.ask is not None)


def test_spreads_widen_near_close(hourly: tuple[Exchange, list[Row]]) -> None:
    _, rows = hourly
    two_sided = [r for r in rows if r.bid is not None and r.ask is not None and _near_money(r)]
    near = [_spread(r) for r in two_sided if r.m.close_ts - r.t <= 120]
    far = [_spread(r) for r in two_sided if r.m.close_ts - r.t >= 1200]
    assert len(near) > 30 and len(far) > 300
    assert np.mean(near) > 1.5 * np.mean(far)


def test_spreads_widen_in_fast_markets(hourly: tuple[Exchange, list[Row]]) -> None:
    """Away from close, the quotes after the largest recent index moves are wider than after the calmest."""
    x, rows = hourly
    far = [r for r in rows if r.bid is not None and r.ask is not None and _near_money(r) and r.m.close_ts - r.t >= 1200]
    seen = lambda r: math.floor(r.t + MAKER_LEAD)  # noqa: E731
    moves = np.array([abs(math.log(x.index.value(seen(r)) / x.index.value(seen(r) - FAST_LOOKBACK))) for r in far])
    spreads = np.array([_spread(r) for r in far])
    fast, calm = moves >= np.quantile(moves, 0.9), moves <= np.quantile(moves, 0.5)
    assert spreads[fast].mean() > 1.3 * spreads[calm].mean()


def test_wings_are_one_sided_and_the_money_two_sided(hourly: tuple[Exchange, list[Row]]) -> None:
    _, rows = hourly
    otm = [r for r in rows if r.fair < 0.03]
    itm = [r for r in rows if r.fair > 0.97]
    money = [r for r in rows if _near_money(r)]
    assert len(otm) > 500 and len(itm) > 500 and len(money) > 500
    share = lambda rs, f: sum(map(f, rs)) / len(rs)  # noqa: E731
    assert share(otm, lambda r: r.bid is None) > 0.8  # nobody bids for a lottery ticket...
    assert share(itm, lambda r: r.ask is None) > 0.8  # ...or offers a sure thing
    assert 0.2 < share(otm, lambda r: r.bid is None and r.ask is None) < 0.9  # and the deep wings are often empty
    assert share(money, lambda r: r.bid is not None and r.ask is not None) > 0.9


def test_quotes_are_deterministic_for_a_seed() -> None:
    """Same seed, same book, whatever order markets and times are asked in; another seed, another book."""
    a, b, c = _exchange(7, 2), _exchange(7, 2), _exchange(8, 2)
    ms = [m for m in a.markets() if m.open_ts >= START and m.close_ts <= a.clock.now()]
    times = lambda m: range(m.strike_known_ts + 1, m.close_ts, 97)  # noqa: E731
    qa = {(m.ticker, t): a.quote(m, t) for m in ms for t in times(m)}
    qb = {(m.ticker, t): b.quote(b.market(m.ticker), t) for m in reversed(ms) for t in reversed(times(m))}
    assert qa == qb
    mc = [m for m in c.markets() if (m.ticker, m.strike_known_ts + 1) in qa]
    qc = {(m.ticker, t): c.quote(m, t) for m in mc for t in times(m)}
    assert qc != {k: v for k, v in qa.items() if k in qc}


def test_the_index_path_does_not_depend_on_access_order() -> None:
    """The maker reads ahead of the feed: that must not change the path the feed publishes."""
    first, second = IndexPath(7, 0), IndexPath(7, 0)
    second.value(500)
    second.value(1302)
    assert first.value(2000) == second.value(2000)
    assert np.array_equal(first.values(0, 2000), second.values(0, 2000))


def test_maker_sees_the_true_vol_and_a_fresher_index() -> None:
    x = _exchange(7, 2)
    t = START + 1800.4
    assert x.maker_view(t) == (START + 1802, x.index.value(START + 1802), x.index.vol_at(START + 1802))
    # vol_at is the vol the path is drawn with: returns scaled by it are standard normal (jumps aside).
    secs = np.arange(START, START + 7200)
    rets = np.diff(np.log(x.index.values(START - 1, START + 7199)))
    z = rets / (np.array([x.index.vol_at(s) for s in secs]) / math.sqrt(SECONDS_PER_YEAR))
    z = z[np.abs(z) < 8]
    assert z.std() == pytest.approx(1.0, abs=0.03)


def _model_rows(x: Exchange, rows: list[Row]) -> np.ndarray:
    """The platform's champion model as it would run on the spot feed: the EWMA vol of one-minute grid prices (the
    feed has no gaps here) and the index as published at the quote time (MAKER_LEAD s staler than the maker's)."""
    idx = x.index
    grid = np.arange(idx.origin, int(x.clock.now()) + 1, 60)
    rets = np.diff(np.log([idx.value(int(g)) for g in grid]))
    var = ewma(rets**2, LAMBDA, SEED_VOL**2 / MINUTES_PER_YEAR)
    vol = np.clip(np.sqrt(var * MINUTES_PER_YEAR), VOL_FLOOR, VOL_CAP)  # vol[i] at grid point origin + 60 (i + 1)
    vol_at = [vol[(r.t - idx.origin) // 60 - 1] for r in rows]  # the last grid point at or before t
    first = [r.m.close_ts - 59 for r in rows]
    wm = [float(idx.values(f, r.t).mean()) if r.t >= f else np.nan for f, r in zip(first, rows)]
    nan = lambda v: np.nan if v is None else v  # noqa: E731
    return prob_yes(np.array([r.m.strike_type for r in rows], dtype=object), np.array([nan(r.m.floor) for r in rows]),
                    np.array([nan(r.m.cap) for r in rows]), np.array([idx.value(r.t) for r in rows]), np.array(vol_at),
                    np.array([r.m.close_ts - r.t for r in rows]), model=CHAMPION, window_mean=np.array(wm))


def test_market_mid_forecasts_better_than_the_model() -> None:
    """As in recorded Kalshi data, the mid's Brier score against the simulated outcomes beats the model's, on the
    same two-sided quotes. Fast mode: short windows settle many outcomes, and there the fresher index tells most."""
    mids, models, outcomes = [], [], []
    for seed in (1, 2):
        x = _exchange(seed, 6, fast=True)
        rows = [r for r in _sample(x, 15) if r.bid is not None and r.ask is not None]
        mids += [float(r.bid + r.ask) / 2 for r in rows]
        models += list(_model_rows(x, rows))
        outcomes += [float(x.natural_result(r.m) == "yes") for r in rows]
    mid, model, y = map(np.array, (mids, models, outcomes))
    assert len(y) > 4000 and not np.isnan(model).any()
    brier_mid, brier_model = ((mid - y) ** 2).mean(), ((model - y) ** 2).mean()
    assert brier_mid < brier_model - 0.001, (brier_mid, brier_model)
