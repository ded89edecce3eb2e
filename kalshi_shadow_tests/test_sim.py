"""The simulator speaks the reference shapes: fixed-point strings, cursors, lifecycle, 60-s average settlement."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest
from websockets.sync.client import connect

from kalshi_shadow.sim.server import SimHandle

SUBSCRIBE = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}


def test_markets_are_fixed_point_with_real_ticker_formats(manual_sim: SimHandle) -> None:
    body = httpx.get(manual_sim.kalshi_base_url + "/markets", params={"status": "open", "limit": 1000}).json()
    markets = body["markets"]
    assert body["cursor"] == ""
    by_series = {s: [m for m in markets if m["ticker"].startswith(s + "-")] for s in ("KXBTC15M", "KXBTCD", "KXBTC")}
    assert all(by_series.values())
    m15 = by_series["KXBTC15M"][0]
    assert m15["ticker"] == "KXBTC15M-26JUL290015-15"  # 04:15Z = 00:15 ET
    assert m15["strike_type"] == "greater_or_equal"
    for m in markets:
        for k in ("yes_bid_dollars", "yes_ask_dollars", "no_bid_dollars", "no_ask_dollars", "last_price_dollars"):
            assert isinstance(m[k], str) and len(m[k].split(".")[1]) == 4
        assert m["yes_bid_size_fp"].endswith((".00",)) and "yes_bid" not in m and "yes_ask" not in m
        assert Decimal(m["yes_ask_dollars"]) == 1 - Decimal(m["no_bid_dollars"])
    buckets = [m for m in by_series["KXBTC"] if m["strike_type"] == "between"]
    assert buckets and all(m["cap_strike"] - m["floor_strike"] == pytest.approx(499.99) for m in buckets)
    assert {m["strike_type"] for m in by_series["KXBTC"]} == {"between", "less", "greater"}


def test_fifteen_minute_strike_appears_after_open(manual_sim: SimHandle) -> None:
    url = manual_sim.kalshi_base_url + "/markets/KXBTC15M-26JUL290015-15"
    assert "floor_strike" not in httpx.get(url).json()["market"]
    manual_sim.advance(31)
    assert isinstance(httpx.get(url).json()["market"]["floor_strike"], float)


def test_cursor_pages_cover_everything_once(manual_sim: SimHandle) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        params = {"series_ticker": "KXBTC", "limit": 37, **({"cursor": cursor} if cursor else {})}
        body = httpx.get(manual_sim.kalshi_base_url + "/markets", params=params).json()
        seen += [m["ticker"] for m in body["markets"]]
        pages += 1
        cursor = body["cursor"]
        if not cursor:
            break
    assert pages > 3 and len(seen) == len(set(seen)) == len(manual_sim.exchange.markets()) - sum(
        1 for m in manual_sim.exchange.markets() if m.series != "KXBTC")


def test_lifecycle_and_settlement_on_the_sixty_second_average(manual_sim: SimHandle) -> None:
    ticker = "KXBTC15M-26JUL290015-15"
    url = manual_sim.kalshi_base_url + f"/markets/{ticker}"
    assert httpx.get(url).json()["market"]["status"] == "active"
    manual_sim.advance(15 * 60)
    assert httpx.get(url).json()["market"]["status"] == "closed"
    manual_sim.advance(2)
    m = httpx.get(url).json()["market"]
    assert m["status"] == "determined"
    market = manual_sim.exchange.market(ticker)
    values = manual_sim.exchange.index.values(market.close_ts - 59, market.close_ts)
    assert len(values) == 60
    published = [Decimal(f"{v:.2f}") for v in values]  # the index as published, in cents: what settlement averages
    assert Decimal(m["expiration_value"]) == (sum(published) / 60).quantize(Decimal("0.01"))
    expected = "yes" if Decimal(m["expiration_value"]) >= Decimal(str(m["floor_strike"])) else "no"
    assert m["result"] == expected
    assert m["settlement_value_dollars"] == ("1.0000" if expected == "yes" else "0.0000")
    manual_sim.advance(400)
    assert httpx.get(url).json()["market"]["status"] == "finalized"
    settled = httpx.get(manual_sim.kalshi_base_url + "/markets", params={"status": "settled", "tickers": ticker}).json()
    assert [x["ticker"] for x in settled["markets"]] == [ticker]


def test_outcome_override_models_an_amendment(manual_sim: SimHandle) -> None:
    ticker = "KXBTC15M-26JUL290015-15"
    manual_sim.advance(15 * 60 + 5)
    r = httpx.post(manual_sim.kalshi_base_url.replace("/trade-api/v2", "") + f"/_sim/markets/{ticker}/outcome",
                   json={"result": "scalar", "settlement_value": "0.3700", "status": "amended"})
    assert r.status_code == 200
    m = httpx.get(manual_sim.kalshi_base_url + f"/markets/{ticker}").json()["market"]
    assert (m["status"], m["result"], m["settlement_value_dollars"]) == ("amended", "scalar", "0.3700")


def test_orderbook_shape(manual_sim: SimHandle) -> None:
    manual_sim.advance(40)
    m = next(m for m in manual_sim.exchange.markets() if m.series == "KXBTCD" and manual_sim.exchange.quote(m, manual_sim.clock.now())["yes_bid"])
    book = httpx.get(manual_sim.kalshi_base_url + f"/markets/{m.ticker}/orderbook").json()["orderbook_fp"]
    prices = [Decimal(p) for p, _ in book["yes_dollars"]]
    assert prices == sorted(prices)  # ascending, best bid last


def test_rate_limit_answers_429_without_retry_after(manual_sim: SimHandle) -> None:
    manual_sim.faults(http_429=1)
    r = httpx.get(manual_sim.kalshi_base_url + "/exchange/status")
    assert r.status_code == 429 and r.json() == {"error": "too many requests"} and "retry-after" not in r.headers
    assert httpx.get(manual_sim.kalshi_base_url + "/exchange/status").status_code == 200


def test_unknown_routes_and_no_order_endpoints(manual_sim: SimHandle) -> None:
    for path in ("/portfolio/orders", "/markets/NOPE"):
        r = httpx.get(manual_sim.kalshi_base_url + path)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert httpx.post(manual_sim.kalshi_base_url + "/portfolio/orders", json={}).status_code == 404


def test_coinbase_feed_sequence_and_heartbeats(sim: SimHandle) -> None:
    with connect(sim.coinbase_ws_url) as ws:
        ws.send(json.dumps(SUBSCRIBE))
        assert json.loads(ws.recv())["type"] == "subscriptions"
        msgs = [json.loads(ws.recv(timeout=5)) for _ in range(40)]
    seqs = [m["sequence"] for m in msgs]
    assert all(b > a for a, b in zip(seqs, seqs[1:]))  # the book's sequence: strictly rises, jumps between messages
    assert {"ticker", "heartbeat"} <= {m["type"] for m in msgs}
    heartbeats = [m for m in msgs if m["type"] == "heartbeat"]
    assert all(isinstance(h["last_trade_id"], int) and h["product_id"] == "BTC-USD" for h in heartbeats)
    t = next(m for m in msgs if m["type"] == "ticker")
    assert isinstance(t["price"], str) and isinstance(t["trade_id"], int) and t["time"].endswith("Z")


def test_coinbase_feed_disconnects_without_subscribe(sim: SimHandle) -> None:
    started = time.monotonic()
    with connect(sim.coinbase_ws_url) as ws:
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error"
        with pytest.raises(Exception):
            ws.recv(timeout=5)
    assert 4.5 < time.monotonic() - started < 9


def test_sequence_moves_on_while_a_client_is_away(sim: SimHandle) -> None:
    """Like the real feed: reconnecting after a drop shows a sequence gap."""
    def last_sequence() -> int:
        with connect(sim.coinbase_ws_url) as ws:
            ws.send(json.dumps(SUBSCRIBE))
            assert json.loads(ws.recv())["type"] == "subscriptions"
            return json.loads(ws.recv(timeout=5))["sequence"]

    first = last_sequence()
    time.sleep(1.0)  # ~20 ticks + a heartbeat happen with nobody connected
    assert last_sequence() > first + 5


def test_a_burst_past_the_token_bucket_is_answered_429(sim: SimHandle) -> None:
    """No fault switch: 240 requests from 8 threads far exceed the 20/s bucket (2 s of burst): some get 429."""
    from concurrent.futures import ThreadPoolExecutor

    def burst(_: int) -> list[int]:
        with httpx.Client() as client:
            return [client.get(sim.kalshi_base_url + "/exchange/status").status_code for _ in range(30)]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for chunk in pool.map(burst, range(8)) for c in chunk]
    assert set(codes) == {200, 429}
    assert codes.count(200) >= 40 and codes.count(429) > 0
