"""A Coinbase Exchange-compatible market-data WebSocket feed (`ticker` + `heartbeat`) over the simulated index.

Like the real feed (docs `exchanges.md`, Coinbase feed): a `subscribe` must arrive within 5 s; `sequence` is the
product's order-book sequence, which moves on with every book event, so it jumps between tickers (only matches are
sent) and never falls; tickers are one per match, but now and then (seeded) a cascade of several matches is batched into
one ticker carrying its last `trade_id`, so trade ids jump between tickers without any loss; each heartbeat carries the
`last_trade_id`; numbers are strings except `sequence` and the trade ids.
Test hooks drop given tickers (a run of dropped tickers is followed by a quiet spell over the next two heartbeats, so
the dropped trades are the newest at both and the loss is visible, as the reference defines continuity) or let the
heartbeat overtake a ticker, as happens on the real feed. A planned trade always has a ticker of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from datetime import datetime, timezone

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kalshi_shadow.sim.exchange import Exchange
from kalshi_shadow.sim.faults import Faults

log = logging.getLogger(__name__)
SUBSCRIBE_DEADLINE = 5.0
MALFORMED = [
    "{not json",
    '{"type":"ticker","sequence":"x","product_id":"BTC-USD","price":"1.0","time":"2026-01-01T00:00:00.000000Z"}',
    '{"type":"ticker","product_id":"BTC-USD","time":"2026-01-01T00:00:00.000000Z"}',
    '{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":"abc","time":"2026-01-01T00:00:00.000000Z"}',
    "[]",
]


def _t(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CoinbaseFeed:
    def __init__(self, exchange: Exchange, faults: Faults, *, seed: int = 7, products: tuple[str, ...] = ("BTC-USD",), ticks_per_second: float = 3.0) -> None:
        self.x = exchange
        self.faults = faults
        self.products = products
        self.rate = ticks_per_second
        self.rng = random.Random(seed)
        self.book_rng = random.Random(seed + 1)  # its own stream, so book events leave the price path unchanged
        self.cascade_rng = random.Random(seed + 2)  # and so do batched cascades
        self.cascade_probability = 0.15
        self.sequence = {p: 1_000_000 for p in products}
        self.trade_id = {p: 500_000 for p in products}
        self.clients: dict[ServerConnection, set[str]] = {}
        self.connections_total = 0
        self._plan_lock = threading.Lock()  # tests plan from their own thread while the pump runs in the loop's
        self._drop: set[tuple[str, int]] = set()
        self._heartbeat_first: set[tuple[str, int]] = set()
        self._quiet = {p: 0 for p in products}  # heartbeats to go before the next trade (after dropped tickers)
        self._quiet_after: dict[tuple[str, int], int] = {}

    def _book_events(self, product: str, low: int, high: int) -> int:
        """The order-book sequence after `low..high` book events (adds, cancels, changes) nobody here is sent."""
        self.sequence[product] += self.book_rng.randint(low, high)
        return self.sequence[product]

    def _ahead(self, product: str, offsets: tuple[int, ...]) -> list[int]:
        base = self.trade_id[product]
        if not offsets or min(offsets) < 1:
            raise ValueError("offsets count from the next trade: 1 or more")
        return [base + k for k in offsets]

    def drop_trades(self, *offsets: int, product: str = "BTC-USD", quiet_heartbeats: int = 2) -> list[int]:
        """Never deliver the tickers of the trades `offsets` ahead (1 = the next one); returns their trade ids.

        A run of consecutive dropped trades happens at once, and after it no trade happens until `quiet_heartbeats`
        (at least 2) heartbeats have gone out, each announcing the run's last trade: the first leaves room for a late
        ticker, the next shows the loss."""
        if quiet_heartbeats < 2:
            raise ValueError("a loss shows only at the second heartbeat that announces it")
        with self._plan_lock:
            ids = self._ahead(product, offsets)
            self._drop.update((product, i) for i in ids)
            self._quiet_after.update({(product, i): quiet_heartbeats for i in ids})
        return ids

    def heartbeat_first(self, *offsets: int, product: str = "BTC-USD") -> list[int]:
        """Send a heartbeat announcing each of these trades just before its ticker; returns their trade ids."""
        with self._plan_lock:
            ids = self._ahead(product, offsets)
            self._heartbeat_first.update((product, i) for i in ids)
        return ids

    def _matches(self, product: str) -> int:
        """How many matches the next ticker carries: now and then a cascade, never past or around a planned trade."""
        n = 1
        if self.cascade_rng.random() < self.cascade_probability:
            n = self.cascade_rng.randint(2, 6)
        first = self.trade_id[product] + 1
        for i in range(first, first + n):
            if (product, i) in self._drop or (product, i) in self._heartbeat_first:
                return max(1, i - first)  # the cascade ends before it; a planned trade goes alone
        return n

    def ticker(self, product: str, now: float) -> dict:
        # The venue's own price (the index times Coinbase's basis, `venues.py`), any fault's error, and a little noise.
        px = self.x.venues.price("coinbase", now) * (1 + self.faults.offset("coinbase")) * (1 + self.rng.gauss(0, 1e-5))
        spread = max(0.01, round(abs(self.rng.gauss(0, 0.5)), 2))
        with self._plan_lock:  # the plan and the trade ids move together
            n = self._matches(product)
            self.trade_id[product] += n  # a batched cascade carries its last trade
        return {
            "type": "ticker",
            "sequence": self._book_events(product, 2 * n, 40 * n),
            "product_id": product,
            "price": f"{px:.2f}",
            "open_24h": f"{self.x.index.at(now - 86400) if now - 86400 >= self.x.index.origin else px:.2f}",
            "volume_24h": f"{8000 + self.rng.random() * 4000:.8f}",
            "low_24h": f"{px * 0.97:.2f}",
            "high_24h": f"{px * 1.03:.2f}",
            "volume_30d": f"{300000 + self.rng.random() * 10000:.8f}",
            "best_bid": f"{px - spread / 2:.2f}",
            "best_bid_size": f"{self.rng.random() * 2:.8f}",
            "best_ask": f"{px + spread / 2:.2f}",
            "best_ask_size": f"{self.rng.random() * 2:.8f}",
            "side": self.rng.choice(["buy", "sell"]),
            "time": _t(now),
            "trade_id": self.trade_id[product],
            "last_size": f"{self.rng.random() * 0.5:.8f}",
        }

    async def _send_all(self, product: str, payload: str) -> None:
        for ws, subs in list(self.clients.items()):
            if product in subs or product == "*":
                try:
                    await ws.send(payload)
                except ConnectionClosed:
                    self.clients.pop(ws, None)

    async def pump(self) -> None:
        """Emit ticks (Poisson) and one heartbeat per product per second to every subscriber."""
        next_heartbeat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate))
            if self.faults.take("drop_ws"):
                for ws in list(self.clients):
                    await ws.close(code=1011, reason="simulated disconnect")
                self.clients.clear()
            while self.faults.malformed_ws > 0 and self.clients and self.faults.take("malformed_ws"):
                await self._send_all("*", self.rng.choice(MALFORMED))
            # Trades and the book move on whether or not anyone listens (or hears it, during a silence), so a
            # client that reconnects sees a trade-id gap, as on the real feed.
            deliver = not self.faults.silent("coinbase") and bool(self.clients)
            now = self.x.clock.now()
            for p in self.products:
                await self._emit_ticker(p, now, deliver)
            if loop.time() >= next_heartbeat:
                next_heartbeat = loop.time() + 1.0
                for p in self.products:
                    await self._emit_heartbeat(p, now, deliver)

    async def _emit_ticker(self, product: str, now: float, deliver: bool) -> None:
        if self._quiet[product] > 0:  # no trade until the heartbeats after a dropped run went out
            return
        msg = self.ticker(product, now)
        key = (product, msg["trade_id"])
        with self._plan_lock:
            dropped, overtaken = key in self._drop, key in self._heartbeat_first
            self._drop.discard(key)
            self._heartbeat_first.discard(key)
            quiet = self._quiet_after.pop(key, 0)
            run_goes_on = (product, msg["trade_id"] + 1) in self._drop
        if overtaken:  # the heartbeat already knows this trade when it goes out ahead of its ticker
            await self._emit_heartbeat(product, now, deliver)
        if deliver and not dropped:
            await self._send_all(product, json.dumps(msg))
        if dropped and run_goes_on:  # the next dropped trade at once: no heartbeat splits the run
            await self._emit_ticker(product, now, deliver)
        elif dropped:
            self._quiet[product] = quiet

    async def _emit_heartbeat(self, product: str, now: float, deliver: bool) -> None:
        hb = {"type": "heartbeat", "sequence": self._book_events(product, 1, 10),
              "last_trade_id": self.trade_id[product], "product_id": product, "time": _t(now)}
        self._quiet[product] = max(0, self._quiet[product] - 1)
        if deliver:
            await self._send_all(product, json.dumps(hb))

    async def handler(self, ws: ServerConnection) -> None:
        self.connections_total += 1
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=SUBSCRIBE_DEADLINE)
        except (asyncio.TimeoutError, TimeoutError):
            await ws.send(json.dumps({"type": "error", "message": "Failed to subscribe", "reason": "subscribe not received within 5 s"}))
            await ws.close(code=1008, reason="subscribe timeout")
            return
        except ConnectionClosed:
            return
        try:
            msg = json.loads(raw)
            products = set(msg["product_ids"])
            channels = [c if isinstance(c, str) else c["name"] for c in msg["channels"]]
            assert msg["type"] == "subscribe"
        except (ValueError, KeyError, TypeError, AssertionError):
            await ws.send(json.dumps({"type": "error", "message": "Failed to subscribe", "reason": "malformed subscribe"}))
            await ws.close()
            return
        unknown = products - set(self.products)
        if unknown:
            await ws.send(json.dumps({"type": "error", "message": "Failed to subscribe", "reason": f"{sorted(unknown)[0]} is not a valid product"}))
            await ws.close()
            return
        await ws.send(json.dumps({"type": "subscriptions", "channels": [{"name": c, "product_ids": sorted(products)} for c in channels]}))
        self.clients[ws] = products
        try:
            await ws.wait_closed()
        finally:
            self.clients.pop(ws, None)

    def serve(self, host: str, port: int):
        return serve(self.handler, host, port, ping_interval=20)
