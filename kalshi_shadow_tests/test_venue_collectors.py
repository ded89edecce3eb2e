"""Issue 16: the Kraken and Bitstamp collectors over loopback, against the simulator's feeds (silence, a requested
reconnect) and a scripted Kraken feed (trade-id gaps, malformed messages, exact decimals)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow_tests.test_collectors import ScriptedFeed, _collector, _health, _rows, _stop
from kalshi_shadow_tests.waiting import wait_for


def _venue(module: str, url: str, data_dir: Path, *extra: str):
    return _collector(module, data_dir, "--url", url, "--flush-seconds", "0.5", *extra)


def test_kraken_collector_rides_out_silence_and_counts_the_trades_it_missed(sim: SimHandle, tmp_path: Path) -> None:
    proc = _venue("collectors.kraken", sim.kraken_ws_url, tmp_path, "--silence-seconds", "2")
    try:
        wait_for(lambda: _health(tmp_path, "kraken").get("rows_acknowledged", 0) > 10)
        sim.faults(venue_silence={"kraken": 4})
        wait_for(lambda: _health(tmp_path, "kraken").get("errors", {}).get("silence", 0) >= 1, timeout=15)
        wait_for(lambda: _health(tmp_path, "kraken").get("gaps", 0) >= 1, timeout=20)  # ids moved on while silent
        before = _health(tmp_path, "kraken")["rows_acknowledged"]
        wait_for(lambda: _health(tmp_path, "kraken")["rows_acknowledged"] > before + 5)
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path, "kraken")
    assert h["status"] == "stopped" and h["reconnects"] >= 1 and h["counters"]["heartbeats"] >= 3
    trades = _rows(tmp_path, "kraken_trades")
    assert trades.height == h["rows_acknowledged"] and trades["trade_id"].is_unique().all()
    assert trades["price"].null_count() == 0 and set(trades["symbol"]) == {"BTC/USD"} and set(trades["side"]) <= {"buy", "sell"}
    assert (trades["received_ts"] >= trades["ts"]).all()
    gaps = _rows(tmp_path, "collector_events").filter(kind="gap")
    assert gaps.height == h["gaps"] and gaps["detail"].str.starts_with("BTC/USD missed").all()


@pytest.mark.slow
def test_bitstamp_collector_keeps_alive_and_reconnects_when_asked(sim: SimHandle, tmp_path: Path) -> None:
    proc = _venue("collectors.bitstamp", sim.bitstamp_ws_url, tmp_path, "--silence-seconds", "5")
    try:
        wait_for(lambda: _health(tmp_path, "bitstamp").get("rows_acknowledged", 0) > 10)
        connections = sim.bitstamp.connections_total
        sim.bitstamp_request_reconnect()
        wait_for(lambda: sim.bitstamp.connections_total > connections)
        wait_for(lambda: _health(tmp_path, "bitstamp").get("counters", {}).get("heartbeats", 0) >= 2)
        before = _health(tmp_path, "bitstamp")["rows_acknowledged"]
        wait_for(lambda: _health(tmp_path, "bitstamp")["rows_acknowledged"] > before + 5)
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path, "bitstamp")
    assert h["status"] == "stopped" and h["reconnects"] >= 1 and h["errors"].get("silence", 0) == 0
    trades = _rows(tmp_path, "bitstamp_trades")
    assert trades.height == h["rows_acknowledged"] and trades["trade_id"].is_unique().all()
    assert trades["trade_id"].is_sorted() and trades["price"].null_count() == 0 and set(trades["symbol"]) == {"btcusd"}


def _kraken_trade(trade_id: int, price: object = 64000.1, qty: object = 0.00012345) -> str:
    return json.dumps({"channel": "trade", "type": "update", "data": [
        {"symbol": "BTC/USD", "side": "buy", "price": price, "qty": qty, "ord_type": "market", "trade_id": trade_id,
         "timestamp": "2026-07-29T04:00:00.123456Z"}]})


def test_kraken_gaps_out_of_order_malformed_and_exact_numbers(tmp_path: Path) -> None:
    ack = json.dumps({"method": "subscribe", "result": {"channel": "trade", "symbol": "BTC/USD", "snapshot": False},
                      "success": True, "time_in": "2026-07-29T04:00:00Z", "time_out": "2026-07-29T04:00:00Z"})
    feed = ScriptedFeed([
        [ack, _kraken_trade(1, 64000.12345678), _kraken_trade(2), _kraken_trade(5),  # 3..4 missed
         _kraken_trade(4),  # late: kept, out of order
         "{broken", _kraken_trade(6, price="64000.1"),  # a decimal string where Kraken sends a number: still exact
         _kraken_trade(7, price=-1),  # malformed: not stored, so missing from the record (a gap)
         json.dumps({"channel": "heartbeat"}), _kraken_trade(8), "CLOSE"],
        [ack, _kraken_trade(11)],  # 9..10 missed across the reconnect
    ])
    proc = _venue("collectors.kraken", feed.url, tmp_path, "--silence-seconds", "2")
    try:
        wait_for(lambda: _health(tmp_path, "kraken").get("rows_acknowledged", 0) >= 7, timeout=30)
    finally:
        code = _stop(proc)
        feed.stop()
    assert code == 0
    h = _health(tmp_path, "kraken")
    assert (h["gaps"], h["missed_messages"]) == (3, 5)
    assert h["errors"]["out_of_order"] == 1 and h["errors"]["malformed"] == 2 and h["counters"]["heartbeats"] == 1
    assert feed.subscribes[0] == {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": False},
                                  "req_id": 1}
    trades = _rows(tmp_path, "kraken_trades")
    assert trades["trade_id"].to_list() == [1, 2, 5, 4, 6, 8, 11]
    assert trades["price"][0] == Decimal("64000.12345678") and trades["size"][0] == Decimal("0.00012345")
    gaps = sorted(_rows(tmp_path, "collector_events").filter(kind="gap")["detail"].to_list())
    assert gaps == ["BTC/USD missed 1 trade: ids 7..7", "BTC/USD missed 2 trades: ids 3..4",
                    "BTC/USD missed 2 trades: ids 9..10"]
