"""A Coinbase Exchange-compatible market-data WebSocket feed (`ticker` + `heartbeat`) over the simulated index.

Like the real feed: a `subscribe` must arrive within 5 s, `sequence` is per product and rises by one across
message types, numbers are strings except `sequence` and `trade_id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
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
        self.sequence = {p: 1_000_000 for p in products}
        self.trade_id = 500_000
        self.clients: dict[ServerConnection, set[str]] = {}
        self.connections_total = 0

    def _next_seq(self, product: str) -> int:
        self.sequence[product] += 1
        return self.sequence[product]

    def ticker(self, product: str, now: float) -> dict:
        px = self.x.index.at(now) * (1 + self.rng.gauss(0, 2e-5))
        spread = max(0.01, round(abs(self.rng.gauss(0, 0.5)), 2))
        self.trade_id += 1
        return {
            "type": "ticker",
            "sequence": self._next_seq(product),
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
            "trade_id": self.trade_id,
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
            # The exchange's sequence moves on whether or not anyone listens (or hears it, during a silence), so a
            # client that reconnects sees a gap, as on the real feed.
            deliver = not self.faults.silent() and bool(self.clients)
            now = self.x.clock.now()
            for p in self.products:
                msg = json.dumps(self.ticker(p, now))
                if deliver:
                    await self._send_all(p, msg)
            if loop.time() >= next_heartbeat:
                next_heartbeat = loop.time() + 1.0
                for p in self.products:
                    hb = {"type": "heartbeat", "sequence": self._next_seq(p), "last_trade_id": self.trade_id, "product_id": p, "time": _t(now)}
                    if deliver:
                        await self._send_all(p, json.dumps(hb))

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
