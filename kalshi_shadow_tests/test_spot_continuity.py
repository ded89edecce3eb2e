"""Spot continuity by trade id against the simulator's real WebSocket feed on loopback: the simulator's book `sequence`
jumps between tickers and loses nothing, dropped tickers are exactly the recorded gaps, and a ticker that arrives
after the heartbeat announcing it is kept without counting as a gap."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import polars as pl
from websockets.sync.client import connect

from collectors.health import read_health
from kalshi_shadow.raw import list_raw_files
from kalshi_shadow.sim.server import SimHandle

REPO = Path(__file__).parents[1]
SUBSCRIBE = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}
T = TypeVar("T")


def _spot(url: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    log = open(data_dir / "spot.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "collectors.spot", "--data-dir", str(data_dir), "--url", url,
                             "--flush-seconds", "0.3", *extra], cwd=REPO, stdout=log, stderr=log, env=dict(os.environ))


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def _wait(predicate: Callable[[], T], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


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
        _wait(lambda: any(t > past_trade for t in _trade_ids(data_dir)), timeout=timeout)
    finally:
        assert _stop(proc) == 0
    return _health(data_dir)


def _read_feed(sim: SimHandle, n: int, plan: Callable[[], None] = lambda: None) -> list[dict]:
    with connect(sim.coinbase_ws_url) as ws:
        ws.send(json.dumps(SUBSCRIBE))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscriptions"
        plan()
        return [json.loads(ws.recv(timeout=5)) for _ in range(n)]


# ---- the simulator --------------------------------------------------------------------------------------------------
def test_feed_sequence_jumps_while_trade_ids_are_contiguous(sim: SimHandle) -> None:
    msgs = _read_feed(sim, 80)
    tickers = [m for m in msgs if m["type"] == "ticker"]
    seqs = [m["sequence"] for m in msgs]
    assert seqs == sorted(set(seqs))  # only ever rises
    assert all(b - a >= 2 for a, b in zip([t["sequence"] for t in tickers], [t["sequence"] for t in tickers][1:]))
    ids = [t["trade_id"] for t in tickers]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    newest = None
    for m in msgs:
        if m["type"] == "ticker":
            newest = m["trade_id"]
        elif m["type"] == "heartbeat" and newest is not None:
            assert m["last_trade_id"] == newest and isinstance(m["last_trade_id"], int)
    assert any(m["type"] == "heartbeat" for m in msgs)
    assert all(isinstance(t["trade_id"], int) and isinstance(t["price"], str) for t in tickers)


def test_feed_drops_planned_tickers_and_lets_a_heartbeat_overtake_one(sim: SimHandle) -> None:
    planned: dict[str, list[int]] = {}

    def plan() -> None:
        planned["dropped"] = sim.feed.drop_trades(5, 6, 12)
        planned["overtaken"] = sim.feed.heartbeat_first(20)

    msgs = _read_feed(sim, 45, plan)
    ids = [m["trade_id"] for m in msgs if m["type"] == "ticker"]
    assert set(planned["dropped"]).isdisjoint(ids) and _missing(ids) == set(planned["dropped"])
    (late,) = planned["overtaken"]
    i = next(i for i, m in enumerate(msgs) if m["type"] == "ticker" and m["trade_id"] == late)
    assert msgs[i - 1]["type"] == "heartbeat" and msgs[i - 1]["last_trade_id"] == late  # announced before it came


# ---- the collector ---------------------------------------------------------------------------------------------------
def test_sequence_jumps_alone_record_no_gap(sim: SimHandle, tmp_path: Path) -> None:
    h = _collect_until(sim, tmp_path, sim.feed.trade_id["BTC-USD"] + 50)
    ticks = _rows(tmp_path, "spot_ticks")
    seqs, ids = ticks["sequence"].to_list(), ticks["trade_id"].to_list()
    assert all(b - a >= 2 for a, b in zip(seqs, seqs[1:]))  # every tick is a sequence jump
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert h["counters"]["heartbeats"] >= 2
    assert (h["gaps"], h["missed_messages"]) == (0, 0) and _gap_details(tmp_path) == []
    assert "out_of_order" not in h["errors"]


def test_dropped_tickers_are_exactly_the_gaps_and_an_overtaken_ticker_is_kept(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    try:
        _wait(lambda: len(_trade_ids(tmp_path)) > 10)  # continuity has a baseline
        a, b, c = sim.feed.drop_trades(20, 21, 40)
        (late,) = sim.feed.heartbeat_first(60)
        _wait(lambda: any(t > late + 30 for t in _trade_ids(tmp_path)), timeout=30)  # past another heartbeat
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path)
    ids = _trade_ids(tmp_path)
    assert _missing(ids) == {a, b, c} and late in ids  # the ticker after its heartbeat was kept
    assert _gap_details(tmp_path) == sorted([f"BTC-USD missed 2 trades: ids {a}..{b}",
                                             f"BTC-USD missed 1 trade: ids {c}..{c}"])
    assert (h["gaps"], h["missed_messages"]) == (2, 3)
    assert "out_of_order" not in h["errors"] and len(ids) == len(set(ids))


def test_drop_and_silence_faults_show_as_trade_gaps_across_reconnects(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path, "--silence-seconds", "1")
    try:
        _wait(lambda: len(_trade_ids(tmp_path)) > 10)
        sim.faults(drop_ws=1)
        _wait(lambda: _health(tmp_path).get("reconnects", 0) >= 1)
        sim.faults(ws_silence_seconds=2)
        _wait(lambda: _health(tmp_path).get("errors", {}).get("silence", 0) >= 1)
        past = sim.feed.trade_id["BTC-USD"] + 20
        _wait(lambda: any(t > past for t in _trade_ids(tmp_path)), timeout=30)
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path)
    details = _gap_details(tmp_path)
    ids = _trade_ids(tmp_path)
    assert details and all(d.endswith("across reconnect") for d in details)
    assert _recorded(details) == _missing(ids)  # every missed trade recorded, nothing else
    assert h["gaps"] == len(details) and h["missed_messages"] == len(_missing(ids))
