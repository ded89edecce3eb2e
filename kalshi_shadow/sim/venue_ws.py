"""Kraken- and Bitstamp-compatible public trade feeds over the simulated venues (formats: docs `exchanges.md`).

- **Kraken WebSocket v2**: a `status` message on connect; `{"method":"subscribe","params":{"channel":"trade",
  "symbol":["BTC/USD"]}}` is acknowledged with `success`; trades come as `{"channel":"trade","type":"update",
  "data":[{symbol, side, price, qty, ord_type, trade_id, timestamp}]}` with price and qty as JSON numbers and trade
  ids counting 1 by 1 per pair; `{"channel":"heartbeat"}` once a second; `{"method":"ping"}` is answered `pong`.
- **Bitstamp WebSocket v2**: `{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd"}}` is answered
  `bts:subscription_succeeded`; trades are `{"event":"trade","channel":"live_trades_btcusd","data":{id, timestamp,
  amount, amount_str, price, price_str, type, microtimestamp, buy_order_id, sell_order_id}}`, ids rising but not by
  one (they are shared with other pairs); no server heartbeat, a client's `bts:heartbeat` is answered; the server may
  ask the client to reconnect (`bts:request_reconnect`).

Each feed trades at its venue's price (the index times its basis, `venues.py`) plus any fault's error, and goes quiet
while its venue is silenced; trades happen (ids move on) whether or not anyone listens.
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


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TradeFeed:
    """A venue's trade stream: Poisson trades to every subscribed client; subclasses speak the venue's protocol."""

    venue = ""

    def __init__(self, exchange: Exchange, faults: Faults, *, seed: int, trades_per_second: float) -> None:
        self.x = exchange
        self.faults = faults
        self.rate = trades_per_second
        self.rng = random.Random(f"{seed}-{self.venue}")
        self.clients: set[ServerConnection] = set()
        self.connections_total = 0
        self.trade_id = 0

    def _trade_price(self, now: float) -> float:
        return self.x.venues.price(self.venue, now) * (1 + self.faults.offset(self.venue)) * (1 + self.rng.gauss(0, 1e-5))

    def trade(self, now: float) -> dict:
        raise NotImplementedError

    def heartbeat(self) -> dict | None:
        return None

    async def _send_all(self, msg: dict) -> None:
        payload = json.dumps(msg)
        for ws in list(self.clients):
            try:
                await ws.send(payload)
            except ConnectionClosed:
                self.clients.discard(ws)

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + 1.0
        while True:
            await asyncio.sleep(min(self.rng.expovariate(self.rate), 1.0))
            msg = self.trade(self.x.clock.now())
            deliver = not self.faults.silent(self.venue)
            if deliver:
                await self._send_all(msg)
            if loop.time() >= next_heartbeat:
                next_heartbeat = loop.time() + 1.0
                hb = self.heartbeat()
                if hb is not None and deliver:
                    await self._send_all(hb)

    async def reply(self, ws: ServerConnection, msg: dict) -> bool:
        """Answer one client message; True once the client is subscribed."""
        raise NotImplementedError

    async def greet(self, ws: ServerConnection) -> None:
        pass

    async def handler(self, ws: ServerConnection) -> None:
        self.connections_total += 1
        try:
            await self.greet(ws)
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except ValueError:
                    await ws.send(json.dumps(self.error("malformed request")))
                    continue
                if await self.reply(ws, msg):
                    self.clients.add(ws)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    def error(self, text: str) -> dict:
        raise NotImplementedError

    def serve(self, host: str, port: int):
        return serve(self.handler, host, port, ping_interval=20)


class KrakenFeed(TradeFeed):
    venue = "kraken"
    SYMBOL = "BTC/USD"

    def __init__(self, exchange: Exchange, faults: Faults, *, seed: int = 7, trades_per_second: float = 2.0) -> None:
        super().__init__(exchange, faults, seed=seed, trades_per_second=trades_per_second)
        self.trade_id = 80_000_000

    def trade(self, now: float) -> dict:
        self.trade_id += 1
        return {"channel": "trade", "type": "update", "data": [{
            "symbol": self.SYMBOL, "side": self.rng.choice(["buy", "sell"]), "price": round(self._trade_price(now), 1),
            "qty": round(self.rng.random() * 0.2 + 1e-5, 8), "ord_type": self.rng.choice(["market", "limit"]),
            "trade_id": self.trade_id, "timestamp": _rfc3339(now)}]}

    def heartbeat(self) -> dict:
        return {"channel": "heartbeat"}

    async def greet(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"channel": "status", "type": "update", "data": [{
            "version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": self.rng.getrandbits(60)}]}))

    def error(self, text: str) -> dict:
        return {"error": text, "method": "subscribe", "success": False}

    async def reply(self, ws: ServerConnection, msg: dict) -> bool:
        now = _rfc3339(self.x.clock.now())
        req = {"req_id": msg["req_id"]} if "req_id" in msg else {}
        if msg.get("method") == "ping":
            await ws.send(json.dumps({"method": "pong", **req, "time_in": now, "time_out": now}))
            return False
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        if msg.get("method") != "subscribe" or params.get("channel") != "trade":
            await ws.send(json.dumps({"error": "Unsupported request", "method": msg.get("method"), "success": False,
                                      "time_in": now, "time_out": now, **req}))
            return False
        symbols = params.get("symbol") or []
        if symbols != [self.SYMBOL]:
            await ws.send(json.dumps({"error": f"Currency pair not supported {symbols}", "method": "subscribe",
                                      "success": False, "symbol": str(symbols), "time_in": now, "time_out": now, **req}))
            return False
        await ws.send(json.dumps({"method": "subscribe", "result": {"channel": "trade", "snapshot": bool(params.get("snapshot", False)),
                                                                     "symbol": self.SYMBOL},
                                  "success": True, "time_in": now, "time_out": now, **req}))
        return True


class BitstampFeed(TradeFeed):
    venue = "bitstamp"
    CHANNEL = "live_trades_btcusd"

    def __init__(self, exchange: Exchange, faults: Faults, *, seed: int = 7, trades_per_second: float = 1.0) -> None:
        super().__init__(exchange, faults, seed=seed, trades_per_second=trades_per_second)
        self.trade_id = 350_000_000
        self.order_id = 1_800_000_000_000_000_000

    def trade(self, now: float) -> dict:
        self.trade_id += self.rng.randint(1, 40)  # ids are shared with the other pairs
        self.order_id += self.rng.randint(1, 10**6)
        px, amount = self._trade_price(now), self.rng.random() * 0.2 + 1e-5
        side = self.rng.randint(0, 1)
        return {"data": {"id": self.trade_id, "timestamp": str(int(now)), "amount": round(amount, 8), "amount_str": f"{amount:.8f}",
                         "price": round(px), "price_str": f"{round(px)}", "type": side, "microtimestamp": str(int(now * 1e6)),
                         "buy_order_id": self.order_id, "sell_order_id": self.order_id - self.rng.randint(1, 10**5)},
                "channel": self.CHANNEL, "event": "trade"}

    def error(self, text: str) -> dict:
        return {"event": "bts:error", "channel": "", "data": {"code": None, "message": text}}

    async def request_reconnect(self) -> None:
        """Ask every client to reconnect, as Bitstamp does before maintenance."""
        await self._send_all({"event": "bts:request_reconnect", "channel": "", "data": ""})

    async def reply(self, ws: ServerConnection, msg: dict) -> bool:
        event = msg.get("event")
        if event == "bts:heartbeat":
            await ws.send(json.dumps({"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}))
            return False
        channel = (msg.get("data") or {}).get("channel") if isinstance(msg.get("data"), dict) else None
        if event != "bts:subscribe" or channel != self.CHANNEL:
            await ws.send(json.dumps(self.error(f"Bad subscription: {event} {channel}")))
            return False
        await ws.send(json.dumps({"event": "bts:subscription_succeeded", "channel": self.CHANNEL, "data": {}}))
        return True
