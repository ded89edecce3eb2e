"""Spot continuity by trade id against the simulator's real WebSocket feed on loopback, as the reference defines it
(docs `exchanges.md`, Coinbase feed): the book `sequence` jumps between tickers and a cascade batched into one ticker
makes the trade id jump, neither loses anything; tickers missing at a heartbeat are exactly the recorded gaps, once;
a ticker that arrives after the heartbeat announcing it is kept without counting as a gap; a gap across a reconnect
is found by the first heartbeat after it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import polars as pl
from websockets.sync.client import connect

from collectors.health import read_health
from kalshi_shadow.raw import list_raw_files
from kalshi_shadow_tests.waiting import wait_for
from kalshi_shadow.sim.server import SimHandle

REPO = Path(__file__).parents[1]
SUBSCRIBE = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}


def _spot(url: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    log = open(data_dir / "spot.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "collectors.spot", "--data-dir", str(data_dir), "--url", url,
                             "--flush-seconds", "0.3", *extra], cwd=REPO, stdout=log, stderr=log, env=dict(os.environ))


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def _health(data_dir: Path) -> dict:
    return read_health(data_dir).get("spot", {})


def _rows(data_dir: Path, table: str) -> pl.DataFrame:
    files = list_raw_files(data_dir / "raw", table)
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def _trade_ids(data_dir: Path) -> list[int]:
    ticks = _rows(data_dir, "spot_ticks")
    return ticks["trade_id"].to_list() if ticks.height else []


def _gap_details(data_dir: Path) -> list[str]:
    events = _rows(data_dir, "collector_events")
    return sorted(events.filter(pl.col("kind") == "gap")["detail"].to_list()) if events.height else []


def _missing(ids: list[int]) -> set[int]:
    return set(range(min(ids), max(ids) + 1)) - set(ids)


def _recorded(details: list[str]) -> set[int]:
    """The trade ids the gap events say were missed."""
    out: set[int] = set()
    for d in details:
        first, last = map(int, re.search(r"ids (\d+)\.\.(\d+)", d).groups())
        out |= set(range(first, last + 1))
    return out


def _collect_until(sim: SimHandle, data_dir: Path, past_trade: int, *extra: str, timeout: float = 30.0) -> dict:
    """Run the collector until it has written a trade past `past_trade`, stop it cleanly, return its health."""
    proc = _spot(sim.coinbase_ws_url, data_dir, *extra)
    try:
        wait_for(lambda: any(t > past_trade for t in _trade_ids(data_dir)), timeout=timeout)
    finally:
        assert _stop(proc) == 0
    return _health(data_dir)


def _read_feed(sim: SimHandle, until: Callable[[list[dict]], bool], plan: Callable[[], None] = lambda: None,
               cap: int = 400) -> list[dict]:
    """Subscribe, run `plan`, then read messages until `until(messages)` holds."""
    msgs: list[dict] = []
    with connect(sim.coinbase_ws_url) as ws:
        ws.send(json.dumps(SUBSCRIBE))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscriptions"
        plan()
        while not until(msgs):
            assert len(msgs) < cap, "feed did not get there"
            msgs.append(json.loads(ws.recv(timeout=5)))
    return msgs


def _tickers(msgs: list[dict]) -> list[dict]:
    return [m for m in msgs if m["type"] == "ticker"]


def _heartbeats_vs_newest(msgs: list[dict]) -> list[tuple[int, int]]:
    """(last_trade_id, newest ticker's trade_id) for every heartbeat after the first ticker."""
    out, newest = [], None
    for m in msgs:
        if m["type"] == "ticker":
            newest = m["trade_id"]
        elif m["type"] == "heartbeat" and newest is not None:
            out.append((m["last_trade_id"], newest))
    return out


# ---- the simulator --------------------------------------------------------------------------------------------------
def test_feed_sequence_and_trade_ids_jump_without_loss(sim: SimHandle) -> None:
    msgs = _read_feed(sim, lambda ms: len(ms) >= 150)
    tickers = _tickers(msgs)
    seqs = [m["sequence"] for m in msgs]
    assert seqs == sorted(set(seqs))  # only ever rises
    assert all(b - a >= 2 for a, b in zip([t["sequence"] for t in tickers], [t["sequence"] for t in tickers][1:]))
    ids = [t["trade_id"] for t in tickers]
    assert ids == sorted(set(ids))
    assert _missing(ids)  # batched cascades: the ticker carries the last trade, so ids jump ...
    hbs = _heartbeats_vs_newest(msgs)
    assert hbs and all(last == newest for last, newest in hbs)  # ... and every heartbeat says nothing was lost
    assert all(isinstance(m["last_trade_id"], int) for m in msgs if m["type"] == "heartbeat")
    assert all(isinstance(t["trade_id"], int) and isinstance(t["price"], str) for t in tickers)


def test_feed_drops_planned_tickers_and_lets_a_heartbeat_overtake_one(sim: SimHandle) -> None:
    planned: dict[str, list[int]] = {}

    def plan() -> None:
        planned["dropped"] = sim.feed.drop_trades(8, 9, 16)
        planned["overtaken"] = sim.feed.heartbeat_first(24)

    msgs = _read_feed(sim, lambda ms: any(m["type"] == "ticker" and m["trade_id"] > planned["overtaken"][0] for m in ms),
                      plan)
    a, b, c = planned["dropped"]
    (late,) = planned["overtaken"]
    ids = [t["trade_id"] for t in _tickers(msgs)]
    assert {a, b, c} <= _missing(ids) and {a - 1, c - 1, late - 1, late} <= set(ids)  # cascades stop short of them
    # Each dropped run is the newest trade at the next two heartbeats, before trading resumes: a visible loss.
    for first, last in ((a, b), (c, c)):
        rest = msgs[next(i for i, m in enumerate(msgs) if m.get("trade_id") == first - 1) + 1:]
        k = next(i for i, m in enumerate(rest) if m["type"] == "ticker")
        announced = [m["last_trade_id"] for m in rest[:k]]
        assert announced[-2:] == [last, last] and set(announced) <= {first - 1, last} and rest[k]["trade_id"] > last
    i = next(i for i, m in enumerate(msgs) if m["type"] == "ticker" and m["trade_id"] == late)
    assert msgs[i - 1]["type"] == "heartbeat" and msgs[i - 1]["last_trade_id"] == late  # announced before it came
    # Every other heartbeat matches the newest ticker: the other id jumps are batched cascades.
    explained = {(b, a - 1), (c, c - 1), (late, late - 1)}
    assert all(last == newest or (last, newest) in explained for last, newest in _heartbeats_vs_newest(msgs))


# ---- the collector ---------------------------------------------------------------------------------------------------
def test_sequence_and_cascade_jumps_alone_record_no_gap(sim: SimHandle, tmp_path: Path) -> None:
    h = _collect_until(sim, tmp_path, sim.feed.trade_id["BTC-USD"] + 150)
    ticks = _rows(tmp_path, "spot_ticks")
    seqs, ids = ticks["sequence"].to_list(), ticks["trade_id"].to_list()
    assert all(b - a >= 2 for a, b in zip(seqs, seqs[1:]))  # every tick is a sequence jump
    assert ids == sorted(set(ids)) and _missing(ids)  # and batched cascades make trade-id jumps
    assert h["counters"]["heartbeats"] >= 2
    assert (h["gaps"], h["missed_messages"]) == (0, 0) and _gap_details(tmp_path) == []
    assert "out_of_order" not in h["errors"]


def test_dropped_tickers_are_exactly_the_gaps_and_an_overtaken_ticker_is_kept(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    try:
        wait_for(lambda: len(_trade_ids(tmp_path)) > 10)  # continuity has a baseline
        a, b, c = sim.feed.drop_trades(20, 21, 40)
        (late,) = sim.feed.heartbeat_first(60)
        wait_for(lambda: any(t > late + 30 for t in _trade_ids(tmp_path)), timeout=30)  # past another heartbeat
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path)
    ids = _trade_ids(tmp_path)
    assert {a, b, c} <= _missing(ids) and late in ids  # the ticker after its heartbeat was kept
    # Only the tickers missing at a heartbeat are gaps, each recorded once: never the cascades' id jumps.
    assert _gap_details(tmp_path) == sorted([f"BTC-USD missed 2 trades: ids {a}..{b}",
                                             f"BTC-USD missed 1 trade: ids {c}..{c}"])
    assert (h["gaps"], h["missed_messages"]) == (2, 3)
    assert "out_of_order" not in h["errors"] and len(ids) == len(set(ids))


def test_a_gap_across_a_reconnect_is_found_by_the_first_heartbeat_after_it(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    try:
        wait_for(lambda: len(_trade_ids(tmp_path)) > 10)
        (lost,) = sim.feed.drop_trades(10, quiet_heartbeats=4)  # the newest trade over the next 4 heartbeats
        wait_for(lambda: sim.feed.trade_id["BTC-USD"] >= lost, timeout=10)
        sim.faults(drop_ws=1)  # the connection drops while the lost trade is the newest
        wait_for(lambda: any(t > lost for t in _trade_ids(tmp_path)), timeout=30)
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path)
    assert h["reconnects"] >= 1
    assert _gap_details(tmp_path) == [f"BTC-USD missed 1 trade: ids {lost}..{lost} across reconnect"]
    assert (h["gaps"], h["missed_messages"]) == (1, 1)


def test_reconnects_and_silence_keep_every_ticker_and_id_jumps_across_them_are_no_gap(sim: SimHandle,
                                                                                        tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path, "--silence-seconds", "1")
    try:
        wait_for(lambda: len(_trade_ids(tmp_path)) > 10)
        sim.faults(drop_ws=1)
        wait_for(lambda: _health(tmp_path).get("reconnects", 0) >= 1)
        sim.faults(ws_silence_seconds=2)
        wait_for(lambda: _health(tmp_path).get("errors", {}).get("silence", 0) >= 1)
        past = sim.feed.trade_id["BTC-USD"] + 20
        wait_for(lambda: any(t > past for t in _trade_ids(tmp_path)), timeout=30)
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path)
    ids = _trade_ids(tmp_path)
    assert h["reconnects"] >= 2 and ids == sorted(set(ids))
    # Trades went on while the collector was away, but the first heartbeat after each reconnect came with (or after)
    # the newest ticker: a trade-id jump alone is no gap.
    assert (h["gaps"], h["missed_messages"]) == (0, 0) and _gap_details(tmp_path) == []
    assert "rebase" not in h["errors"] and "out_of_order" not in h["errors"]
