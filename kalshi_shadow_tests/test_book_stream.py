"""Issue 17: Kalshi's book stream, with real processes on loopback.

The simulator streams its books (`orderbook_delta` with `seq`), serves `/exchange/status` and can drop a delta or
pause trading. The keyed collectors record them (the book stream, the REST poller standing by, the venues), the
real Dagster assets load and price them, and the decision engine decides on them with a permissive rule set. Four
things must hold: the stored top of book is the simulator's at every change; a dropped delta is detected and
repaired; a pause gives `exchange_paused` skips and no takes; a take that walks the book buys no more than its
levels held, at their volume-weighted price and the per-order fee on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kalshi_shadow.config import Settings
from kalshi_shadow.decisions.engine import decide
from kalshi_shadow.decisions.rulesets import load_rule_sets
from kalshi_shadow.defs import pricing
from kalshi_shadow.defs.ingest import kalshi_contracts, raw_assets
from kalshi_shadow.defs.resources import KalshiAPI, Warehouse
from kalshi_shadow.defs.settlements import kalshi_settlements
from kalshi_shadow.pricing.fees import order_fee
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow_tests.test_collectors import _health, _keyed_platform, _rows, _stop
from kalshi_shadow_tests.waiting import wait_for

# A model from outside (the plugin setting): YES is near certain wherever there is an ask, so every two-sided book
# priced is a take, and Kelly on a large bankroll walks the book.
SURE_YES = """
import numpy as np


class SureYes:
    name = "sure-yes-v1"

    def prob_yes(self, x):
        return np.where(np.isnan(x.yes_ask), np.nan, 0.99)
"""

PERMISSIVE = """
[rule_sets.any]
model = "sure-yes-v1"
series = ["KXBTC15M", "KXBTCD", "KXBTC"]
min_ev = -1.0
max_spread = 1.0
min_tau_seconds = 0
max_tau_seconds = 86400
max_spot_age_seconds = 60
max_quote_age_seconds = 60
min_ask_size = 0
cooldown_seconds = 0
max_positions_per_event = 1000
max_takes_per_day = 100000
bankroll = 1000000.0
kelly_fraction = 1.0
max_contracts_per_trade = 100000
max_stake_per_trade = 100000.0
max_stake_per_event = 1000000.0
haircut_k = 0.0
haircut_window_days = 7
"""


DEPTH = Settings.book_depth  # the default the collector runs with
VENUES = ("spot_ticks", "kraken_trades", "bitstamp_trades")  # the index proxy's inputs


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _top(levels: list) -> tuple:
    return (Decimal(levels[0][0]), Decimal(levels[0][1])) if levels else (None, None)


@pytest.mark.slow
def test_the_book_stream_records_the_exchanges_books_repairs_gaps_and_honours_pauses(
        sim: SimHandle, rsa_key: rsa.RSAPrivateKey, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sureyes.py").write_text(SURE_YES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KALSHI_SHADOW_MODELS", "sureyes:SureYes")
    key_file = tmp_path / "kalshi.pem"
    key_file.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    keyed = {"KALSHI_API_KEY_ID": "test-key", "KALSHI_PRIVATE_KEY_PATH": str(key_file), "KALSHI_BASE_URL": sim.kalshi_base_url}
    procs = _keyed_platform(sim, tmp_path, "collectors.books", keyed)
    try:
        wait_for(lambda: _health(tmp_path, "books").get("streaming") is True, timeout=30, what="the book stream")
        t0 = _now()
        wait_for(lambda: _health(tmp_path, "quotes").get("quotes_from") == "stream", timeout=15, what="the poller standing by")
        wait_for(lambda: _now() > t0 + timedelta(seconds=6), timeout=10)
        gap_at = int(_now().timestamp())
        sim.faults(drop_delta=1)  # one delta numbered and never sent
        wait_for(lambda: _health(tmp_path, "books").get("counters", {}).get("resnapshots", 0) >= 1, timeout=10, what="the gap")
        wait_for(lambda: _health(tmp_path, "books").get("streaming") is True, timeout=10, what="books synced again")
        # An outcome decided early (the simulator's override): the lifecycle channel announces it.
        decided = httpx.get(f"{sim.kalshi_base_url}/markets", params={"series_ticker": "KXBTCD", "status": "open"}).json()["markets"][0]["ticker"]
        sim.set_outcome(decided, "yes")
        sim.faults(pause_seconds=6)  # trading pauses (sim time = wall time here)
        paused_at = _now()
        wait_for(lambda: _now() > paused_at + timedelta(seconds=10), timeout=15, what="the pause and after")
        # Takes need a model price, which needs the vol grid: its first point is the first whole minute after the
        # index had its first price. Run on until some seconds after it, counted from when every venue had written
        # (a loaded machine may start a collector seconds late), and for at least 25 s of stream to compare.
        wait_for(lambda: all(_rows(tmp_path, t).height for t in VENUES), timeout=30, what="every venue's first trade")
        indexed = max(_rows(tmp_path, t)["received_ts"].min() for t in VENUES)
        priced = indexed.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=10)
        wait_for(lambda: _now() > max(priced, t0 + timedelta(seconds=25)), timeout=90, what="quotes priced with a vol")
        t1 = _now()
    finally:
        codes = [_stop(p) for p in procs]
    assert codes == [0, 0, 0, 0, 0]
    books = _health(tmp_path, "books")
    # exactly the dropped delta: listing changes (add/delete_markets replies take seq numbers too) are no gap
    assert books["gaps"] == 1 and books["missed_messages"] == 1 and books.get("errors", {}).get("malformed", 0) == 0

    # 1. The stored top of book is the simulator's at every change (and its depth at every row), for the markets
    #    followed throughout (all of them: a wing market may not change at all in the window); the seconds around the
    #    gap are checked for rows, not for completeness.
    quotes = _rows(tmp_path, "kalshi_quotes")
    stream = quotes.filter(quotes["source"] == "ws_orderbook")
    rest = quotes.filter(quotes["source"] == "rest_markets")
    # REST polls until the stream has the books, then stands by (and takes over when the stream stops, at the end)
    assert stream.height > 50 and rest.filter((rest["ts"] > t0 + timedelta(seconds=3)) & (rest["ts"] < t1)).height == 0
    lo, hi = int(t0.timestamp()) + 1, int(t1.timestamp()) - 3
    checked = changes = 0
    for ticker in sorted(set(stream["ticker"])):
        truth = httpx.get(f"{sim.kalshi_base_url.split('/trade-api')[0]}/_sim/markets/{ticker}/books",
                          params={"from": lo - 1, "to": hi}).json()["books"]
        at = {b["second"]: b for b in truth}
        rows = stream.filter(stream["ticker"] == ticker).sort("ts")
        for r in rows.iter_rows(named=True):
            sec = int(r["ts"].timestamp())
            if lo <= sec <= hi and r["ts"].microsecond == 0:  # a delta's row: the book of its second
                b = at[sec]
                assert (r["yes_bid"], r["yes_bid_size"]) == _top(b["yes"]), (ticker, sec)
                assert (r["no_bid"], r["yes_ask_size"]) == _top(b["no"]), (ticker, sec)
                # the stored depth: the simulator's best DEPTH levels of each side (it holds five)
                assert [(lv["price"], lv["size"]) for lv in r["yes_bid_levels"]] == [(Decimal(p), Decimal(c)) for p, c in b["yes"][:DEPTH]]
                assert [(lv["price"], lv["size"]) for lv in r["no_bid_levels"]] == [(Decimal(p), Decimal(c)) for p, c in b["no"][:DEPTH]]
                checked += 1
        seconds = {int(t.timestamp()) for t in rows["ts"]}
        for sec in range(lo, hi + 1):
            if gap_at - 1 <= sec <= gap_at + 4:
                continue  # the dropped delta's change may show only in the re-snapshot that repairs it
            if (_top(at[sec]["yes"]), _top(at[sec]["no"])) != (_top(at[sec - 1]["yes"]), _top(at[sec - 1]["no"])):
                changes += 1
                assert sec in seconds or sec + 1 in seconds, (ticker, sec)  # every change has its row
    assert checked > 30 and changes > 10

    # 2-4 on the warehouse: load and price with the real assets, then decide with a permissive rule set.
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    assert dg.materialize([*raw_assets, kalshi_contracts, pricing.spot_index, pricing.spot_vol], resources={"warehouse": wh}).success
    assert dg.materialize([pricing.kalshi_edge_snapshots], partition_key=_now().date().isoformat(), resources={"warehouse": wh},
                          tags={pricing.LIVE_TAG: "live"}).success
    # 2b. Settlement from the stream: the early outcome lands from the lifecycle event, with no read of that ticker.
    assert dg.materialize([kalshi_settlements], resources={"warehouse": wh, "kalshi": KalshiAPI(base_url=sim.kalshi_base_url)}).success
    (tmp_path / "rules.toml").write_text(PERMISSIVE)
    rs = load_rule_sets(tmp_path / "rules.toml")[0]
    with utc(duckdb.connect(wh.database)) as conn:
        run = decide(conn, rs)
        assert run.bad_takes == 0
        n_gap = conn.execute("SELECT count(*) FROM collector_events WHERE collector = 'books' AND kind = 'gap'").fetchall()[0][0]
        assert n_gap >= 1
        status = conn.execute("""SELECT count(*) FILTER (WHERE NOT trading_active), count(*) FILTER (WHERE trading_active)
                                 FROM kalshi_exchange_status""").fetchall()[0]
        assert status[0] >= 3 and status[1] >= 3
        outcome = conn.execute("""SELECT c.outcome, c.settlement_value, o.source, o.status FROM kalshi_contracts AS c
                                  JOIN kalshi_settlement_observations AS o USING (ticker) WHERE ticker = ?""", [decided]).fetchall()
        # (a REST read, if the contract closed meanwhile, is the check: it agrees)
        assert ("yes", Decimal("1.0000"), "stream", "determined") in outcome and {o[:2] for o in outcome} == {("yes", Decimal("1.0000"))}
        # 3. The pause: its snapshots say so, they are skipped as exchange_paused, and nothing is taken on them.
        paused = conn.execute("""
            SELECT count(*) FILTER (WHERE w.reason = 'exchange_paused'),
                   count(*) FILTER (WHERE w.action = 'take' AND s.trading_active IS FALSE),
                   count(*) FILTER (WHERE w.reason = 'exchange_paused' AND s.trading_active IS NOT FALSE)
            FROM kalshi_would_trades AS w JOIN kalshi_edge_snapshots AS s USING (snapshot_id)""").fetchall()[0]
        assert paused[0] > 0 and paused[1] == 0 and paused[2] == 0, paused
        # 4. Takes on stream quotes walk the book: against the quote's levels, their VWAP, the fee on it.
        takes = conn.execute("""
            SELECT w.side, w.contracts, w.fee, w.cost, w.avg_price, w.levels_used,
                   CASE w.side WHEN 'yes' THEN q.no_bid_levels ELSE q.yes_bid_levels END AS bids
            FROM kalshi_would_trades AS w JOIN kalshi_edge_snapshots AS s USING (snapshot_id)
            JOIN kalshi_quotes AS q ON q.quote_key = s.quote_key AND q.ts = s.quote_ts
            WHERE w.action = 'take' AND q.no_bid_levels IS NOT NULL""").fetchall()
        why = conn.execute("""SELECT w.action, w.reason, min(s.quote_ts), max(s.quote_ts), count(*) FROM kalshi_would_trades AS w
                              JOIN kalshi_edge_snapshots AS s USING (snapshot_id) GROUP BY ALL ORDER BY ALL""").fetchall()
        vol = conn.execute("SELECT min(grid_ts), max(grid_ts) FROM spot_vol").fetchall()
    assert len(takes) >= 1, (why, vol)  # (what the decisions were instead, and the vol grid's span)
    walked = 0
    for side, contracts, fee, cost, avg, used, bids in takes:
        asks = sorted((1 - lv["price"], lv["size"]) for lv in bids)
        assert contracts <= sum(int(n) for _, n in asks)  # never more than the book held
        left, paid, expect = contracts, Decimal(0), []
        for price, held in asks:
            k = min(left, int(held))
            if k:
                paid, left = paid + price * k, left - k
                expect.append({"price": float(price), "contracts": k, "size": float(held)})
        assert used == expect and avg == pytest.approx(float(paid / contracts))
        assert fee == pytest.approx(float(order_fee(paid / contracts, contracts, "quadratic")))
        assert cost == pytest.approx(float(paid) + fee)
        walked += len(used) > 1
    assert walked >= 1  # at least one take went past the top level
