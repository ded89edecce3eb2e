"""Kraken WebSocket v2 -> raw `kraken_trades` (formats: docs `exchanges.md`, Kraken).

Subscribes to the `trade` channel for BTC/USD (without the snapshot of past trades: every row is a trade seen live);
`heartbeat` messages (about one a second) keep the watchdog quiet, and a `ping` now and then checks the session.
Prices and quantities are JSON numbers: parsed as exact decimals, never floats.

Continuity: Kraken's trade ids count 1 by 1 per pair, so a trade id more than one past the newest is a gap of the
trades between (counted and recorded as a `gap` event, across a reconnect too); an id at or below the newest is
kept (the warehouse dedups by trade id) and counted out of order.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from websockets.asyncio.client import ClientConnection

from collectors.feed import FeedCollector, Malformed, feed_main, int_field, positive_price, text_field

log = logging.getLogger("collectors.kraken")
SYMBOL = "BTC/USD"


def parse_trade(item: Any, received: datetime) -> dict[str, Any]:
    """One element of a `trade` message's `data` as a `kraken_trades` row; raises Malformed if broken."""
    if not isinstance(item, dict):
        raise Malformed("trade is not an object")
    symbol = text_field(item, "symbol")
    raw_time = item.get("timestamp")
    try:
        ts = datetime.fromisoformat(str(raw_time).replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"'timestamp'={raw_time!r} is not RFC 3339") from None
    if ts.tzinfo is None:
        raise Malformed(f"'timestamp'={raw_time!r} has no timezone")
    side = item.get("side")
    if side not in ("buy", "sell"):
        raise Malformed(f"'side'={side!r} is not buy or sell")
    return {"ts": ts.astimezone(timezone.utc), "received_ts": received, "symbol": symbol,
            "trade_id": int_field(item, "trade_id", required=True), "price": positive_price(item, strings_only=False),
            "size": positive_price(item, "qty", strings_only=False), "side": side}


class KrakenCollector(FeedCollector):
    name = "kraken"
    table = "kraken_trades"
    keepalive_seconds = 30.0
    exact_numbers = True  # prices and quantities are JSON numbers

    def __init__(self, url: str, data_dir, **kw) -> None:
        super().__init__(url, data_dir, **kw)
        self.health.extra["symbol"] = SYMBOL
        self._req = 0

    async def subscribe(self, ws: ClientConnection) -> None:
        self._req += 1
        await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": [SYMBOL], "snapshot": False},
                                  "req_id": self._req}))

    async def keepalive(self, ws: ClientConnection) -> None:
        self._req += 1
        await ws.send(json.dumps({"method": "ping", "req_id": self._req}))

    def _trade_id(self, trade_id: int) -> None:
        if self.newest is not None and trade_id > self.newest + 1:
            n = trade_id - self.newest - 1
            self.health.gaps += 1
            self.health.missed_messages += n
            self.health.event("gap", f"{SYMBOL} missed {n} trade{'s' if n > 1 else ''}: ids {self.newest + 1}..{trade_id - 1}")
            log.warning("kraken: trade gap: missed %d trades %d..%d", n, self.newest + 1, trade_id - 1)
        self.note_order(trade_id, f"{SYMBOL} trade {trade_id}")

    def on_message(self, msg: dict[str, Any], received: datetime) -> None:
        channel, method = msg.get("channel"), msg.get("method")
        if channel in ("trade", "heartbeat"):
            self.health.message()
        if channel == "trade":
            data = msg.get("data")
            if not isinstance(data, list):
                raise Malformed("'data' is not a list")
            rows = [parse_trade(item, received) for item in data]  # all or nothing: a broken element is a broken message
            for row in rows:
                self._trade_id(row["trade_id"])
                self.writer.append(row)
        elif channel == "heartbeat":
            self.health.counters["heartbeats"] += 1
        elif method == "subscribe":
            if msg.get("success") is not True:
                self.health.event("exchange_error", f"subscribe failed: {msg.get('error')}"[:200])
                log.error("kraken: subscribe failed: %s", msg.get("error"))
            else:
                log.info("kraken: subscribed: %s", msg.get("result"))
        elif method == "pong":
            self.health.counters["pongs"] += 1
        elif "error" in msg:
            self.health.event("exchange_error", str(msg.get("error"))[:200])
            log.error("kraken: error: %s", msg.get("error"))
        # `status` and unknown messages are ignored.


def main(argv: list[str]) -> int:
    return feed_main(argv, "kalshi-shadow collect-kraken", __doc__, lambda s: s.kraken_ws_url,
                     lambda a, s: KrakenCollector(a.url, a.data_dir, flush_seconds=a.flush_seconds, silence_seconds=a.silence_seconds))


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
