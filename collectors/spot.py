"""Coinbase Exchange WebSocket -> raw `spot_ticks`.

Subscribes to `ticker` + `heartbeat` as soon as it connects; the session loop (reconnects, backoff, watchdog, heartbeat
files, disk-full retries) is the one every venue shares, `feed.py`.

Continuity is checked by trade id against heartbeats, as the reference defines it (docs `exchanges.md`, Coinbase
feed): `sequence` on `ticker` is the order-book's and jumps between matches, and a ticker carries only the last trade of
a cascade batched into it, so neither a sequence jump nor a trade-id jump between tickers loses anything. Each
heartbeat's `last_trade_id` should equal the newest ticker's `trade_id`; one that is ahead only announces trades, since
their ticker may still follow it: a later ticker at or past the announced id covers them, and what is still uncovered
at the next heartbeat is recorded once as a gap of `announced - newest` trades (which ids). A gap across a reconnect
is found the same way, by the first heartbeat after it. Every ticker is kept (the warehouse dedups by trade id): one
older than the newest is counted out of order; the first after a reconnect re-bases if the ids restarted lower.
Malformed messages are counted, logged (truncated) and skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from collectors.feed import FeedCollector, Malformed, decimal_field, feed_main, int_field, text_field

log = logging.getLogger("collectors.spot")


def _product(msg: dict[str, Any]) -> str:
    return text_field(msg, "product_id")


def parse_ticker(msg: dict[str, Any], received: datetime) -> dict[str, Any]:
    """A `ticker` message as a `spot_ticks` row; raises Malformed on a missing or invalid field."""
    product = _product(msg)
    raw_time = msg.get("time")
    if not isinstance(raw_time, str):
        raise Malformed(f"'time'={raw_time!r} is not a string")
    try:
        ts = datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"'time'={raw_time!r} is not ISO-8601") from None
    if ts.tzinfo is None:
        raise Malformed(f"'time'={raw_time!r} has no timezone")
    price = decimal_field(msg, "price", required=True)
    if price <= 0:
        raise Malformed(f"'price'={price} is not positive")
    side = msg.get("side")
    if side is not None and not isinstance(side, str):
        raise Malformed(f"'side'={side!r} is not a string")
    return {
        "ts": ts.astimezone(timezone.utc), "received_ts": received, "product_id": product,
        "sequence": int_field(msg, "sequence", required=True), "trade_id": int_field(msg, "trade_id", required=True),
        "price": price, "best_bid": decimal_field(msg, "best_bid"), "best_ask": decimal_field(msg, "best_ask"),
        "best_bid_size": decimal_field(msg, "best_bid_size"), "best_ask_size": decimal_field(msg, "best_ask_size"),
        "last_size": decimal_field(msg, "last_size"), "side": side,
    }


@dataclass
class TradeContinuity:
    """One product's trades so far: the `newest` ticker's id, every id up to `through` received (a ticker covers its
    whole cascade) or recorded missing, and a heartbeat's `announced` last_trade_id that no ticker has reached yet
    (pending, not yet a gap); `announced_across` if it spans a reconnect (announced before it, or by a heartbeat that
    came before any ticker of the new connection)."""

    newest: int
    through: int
    announced: int | None = None
    announced_across: bool = False


class SpotCollector(FeedCollector):
    name = "spot"
    table = "spot_ticks"

    def __init__(self, url: str, products: list[str], data_dir: Path, *, flush_seconds: float = 5.0,
                 silence_seconds: float = 10.0) -> None:
        super().__init__(url, data_dir, flush_seconds=flush_seconds, silence_seconds=silence_seconds)
        self.products = products
        self.health.extra["products"] = products
        self.trades: dict[str, TradeContinuity] = {}
        self._rebase: set[str] = set()  # products whose next ticker is the first after a reconnect

    # ---- messages -----------------------------------------------------------------------------------------
    def _gap(self, product: str, first: int, last: int, note: str = "") -> None:
        """Trades `first..last` never arrived: counted in the health record (gaps, missed_messages) and as an event."""
        n = last - first + 1
        self.health.gaps += 1
        self.health.missed_messages += n
        self.health.event("gap", f"{product} missed {n} trade{'s' if n > 1 else ''}: ids {first}..{last}{note}")
        log.warning("trade gap on %s: missed %d trades %d..%d%s", product, n, first, last, note)

    def _ticker_trade(self, product: str, trade_id: int) -> None:
        """A ticker's trade: it covers every trade up to its id (a batched cascade carries only its last), so a skip is
        no gap; at or past what a heartbeat announced, it closes that."""
        state = self.trades.get(product)
        reconnected = product in self._rebase
        self._rebase.discard(product)
        if state is None or (reconnected and trade_id <= state.newest):
            if state is not None:
                self.health.event("rebase", f"{product} trade ids restarted at {trade_id} after {state.newest}")
                log.warning("trade ids of %s restarted at %d (was %d): re-based", product, trade_id, state.newest)
            self.trades[product] = TradeContinuity(trade_id, trade_id)
            return
        if trade_id <= state.newest:
            self.health.event("out_of_order", f"{product} trade {trade_id} after {state.newest}")
            return
        state.newest, state.through = trade_id, max(state.through, trade_id)
        if state.announced is not None and state.announced <= trade_id:
            state.announced, state.announced_across = None, False

    def _heartbeat_trade(self, product: str, last_trade_id: int) -> None:
        """A heartbeat ahead of the newest ticker announces trades whose tickers may still follow: what the previous
        heartbeat announced and no ticker reached since is missed (once); what this one announces waits for the next."""
        state = self.trades.get(product)
        if state is None:  # continuity starts at the first ticker
            return
        if state.announced is not None and state.announced > state.through:
            self._gap(product, state.through + 1, state.announced, " across reconnect" if state.announced_across else "")
            state.through = state.announced
        if last_trade_id > state.through:  # before any ticker of a new connection: compared with the old one's newest
            state.announced, state.announced_across = last_trade_id, product in self._rebase
        else:
            state.announced, state.announced_across = None, False

    def on_message(self, msg: dict[str, Any], received: datetime) -> None:
        """One feed message: a tick is buffered, a heartbeat checks continuity (anything broken raises Malformed)."""
        kind = msg.get("type")
        if kind in ("ticker", "heartbeat"):  # the feed itself: a subscription ack after a reconnect is not data
            self.health.message()
        if kind == "ticker":
            row = parse_ticker(msg, received)
            self._ticker_trade(row["product_id"], row["trade_id"])
            self.writer.append(row)  # never dropped: even a late or repeated trade is an observation
        elif kind == "heartbeat":
            product, last_trade_id = _product(msg), int_field(msg, "last_trade_id", required=True)
            self.health.counters["heartbeats"] += 1
            self._heartbeat_trade(product, last_trade_id)
        elif kind == "error":
            self.health.event("exchange_error", f"{msg.get('message')}: {msg.get('reason')}"[:200])
            log.error("feed error: %s (%s)", msg.get("message"), msg.get("reason"))
        elif kind == "subscriptions":
            log.info("subscribed: %s", msg.get("channels"))
        # Unknown types are ignored, as the feed's contract asks.

    # ---- session hooks ------------------------------------------------------------------------------------
    async def subscribe(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "subscribe", "product_ids": self.products, "channels": ["ticker", "heartbeat"]}))

    def on_connected(self) -> None:
        self._rebase = set(self.trades)
        for state in self.trades.values():  # a pending announcement now spans the reconnect
            state.announced_across = state.announced is not None


def main(argv: list[str]) -> int:
    return feed_main(argv, "kalshi-shadow collect-spot", __doc__, lambda s: s.coinbase_ws_url,
                     lambda a, s: SpotCollector(a.url, a.product or ["BTC-USD"], a.data_dir, flush_seconds=a.flush_seconds,
                                                silence_seconds=a.silence_seconds),
                     lambda ap: ap.add_argument("--product", action="append", help="product id (repeatable); default BTC-USD"))


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
