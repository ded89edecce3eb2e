"""Bitstamp WebSocket v2 -> raw `bitstamp_trades` (formats: docs `exchanges.md`, Bitstamp).

Subscribes to `live_trades_btcusd`. Bitstamp sends no heartbeat of its own, so the collector sends `bts:heartbeat`
every few seconds and the reply keeps the watchdog quiet; `bts:request_reconnect` reconnects at once. Prices come
as `price_str` (exact) and times as `microtimestamp`. Trade ids rise but are shared with the other pairs, so they
show order, not loss: an id at or below the newest is kept (the warehouse dedups) and counted out of order.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from websockets.asyncio.client import ClientConnection

from collectors.feed import FeedCollector, Malformed, Reconnect, feed_main, int_field, positive_price

log = logging.getLogger("collectors.bitstamp")
CHANNEL = "live_trades_btcusd"


def parse_trade(data: Any, received: datetime) -> dict[str, Any]:
    """A `trade` event's `data` as a `bitstamp_trades` row; raises Malformed if broken."""
    if not isinstance(data, dict):
        raise Malformed("'data' is not an object")
    micro = data.get("microtimestamp")
    if not isinstance(micro, str) or not micro.isdigit():
        raise Malformed(f"'microtimestamp'={micro!r} is not a string of digits")
    side = data.get("type")
    if side not in (0, 1):
        raise Malformed(f"'type'={side!r} is not 0 (buy) or 1 (sell)")
    return {"ts": datetime.fromtimestamp(int(micro) // 1_000_000, tz=timezone.utc).replace(microsecond=int(micro) % 1_000_000),
            "received_ts": received, "symbol": "btcusd", "trade_id": int_field(data, "id", required=True),
            "price": positive_price(data, "price_str"), "size": positive_price(data, "amount_str"),
            "side": "buy" if side == 0 else "sell"}


class BitstampCollector(FeedCollector):
    name = "bitstamp"
    table = "bitstamp_trades"
    keepalive_seconds = 3.0

    def __init__(self, url: str, data_dir, **kw) -> None:
        super().__init__(url, data_dir, **kw)
        self.health.extra["channel"] = CHANNEL

    async def subscribe(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"event": "bts:subscribe", "data": {"channel": CHANNEL}}))

    async def keepalive(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"event": "bts:heartbeat"}))

    def on_message(self, msg: dict[str, Any], received: datetime) -> None:
        event = msg.get("event")
        if event in ("trade", "bts:heartbeat"):
            self.health.message()
        if event == "trade":
            row = parse_trade(msg.get("data"), received)
            self.note_order(row["trade_id"], f"trade {row['trade_id']}")
            self.writer.append(row)
        elif event == "bts:heartbeat":
            self.health.counters["heartbeats"] += 1
        elif event == "bts:subscription_succeeded":
            log.info("bitstamp: subscribed to %s", msg.get("channel"))
        elif event == "bts:request_reconnect":
            raise Reconnect("the server asked to reconnect (bts:request_reconnect)")
        elif event == "bts:error":
            self.health.event("exchange_error", str(msg.get("data"))[:200])
            log.error("bitstamp: error: %s", msg.get("data"))
        # Unknown events are ignored.


def main(argv: list[str]) -> int:
    return feed_main(argv, "kalshi-shadow collect-bitstamp", __doc__, lambda s: s.bitstamp_ws_url,
                     lambda a, s: BitstampCollector(a.url, a.data_dir, flush_seconds=a.flush_seconds, silence_seconds=a.silence_seconds))


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
