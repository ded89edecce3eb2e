"""Coinbase Exchange WebSocket -> raw `spot_ticks`.

Subscribes to `ticker` + `heartbeat` as soon as it connects; reconnects with capped, jittered exponential backoff
(reset once a session stayed healthy) and resubscribes, like cryptofeed's connection handler; a watchdog reconnects
when nothing, not even a heartbeat, arrives for `--silence-seconds`.

Continuity is checked by trade id against heartbeats, as the reference defines it (docs `exchanges.md`, Coinbase
feed): `sequence` on `ticker` is the order-book's and jumps between matches, and a ticker carries only the last trade of
a cascade batched into it, so neither a sequence jump nor a trade-id jump between tickers loses anything. Each
heartbeat's `last_trade_id` should equal the newest ticker's `trade_id`; one that is ahead only announces trades, since
their ticker may still follow it: a later ticker at or past the announced id covers them, and what is still uncovered
at the next heartbeat is recorded once as a gap of `announced - newest` trades (which ids). A gap across a reconnect
is found the same way, by the first heartbeat after it. Every ticker is kept (the warehouse dedups by trade id): one
older than the newest is counted out of order; the first after a reconnect re-bases if the ids restarted lower.
Malformed messages are counted, logged (truncated) and skipped. A write that fails (disk full) loses nothing: the
writer keeps the rows and their file's sequence number and retries, each failure counted as a `write_failed` event.
SIGTERM/SIGINT flush, write the final health record (logging any rows a still-full disk kept out) and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI

from collectors.health import Health
from kalshi_shadow.config import ConfigError, Settings
from kalshi_shadow.raw import RawWriter

log = logging.getLogger("collectors.spot")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
HEALTHY_SECONDS = 30.0  # a session that delivered messages this long resets the backoff ladder


class Malformed(ValueError):
    pass


def _dec(msg: dict[str, Any], key: str, required: bool = False) -> Decimal | None:
    raw = msg.get(key)
    if raw is None or raw == "":
        if required:
            raise Malformed(f"missing {key!r}")
        return None
    if not isinstance(raw, str):  # the feed sends every number but sequence/trade_id as a string
        raise Malformed(f"{key!r} is not a decimal string: {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise Malformed(f"{key!r}={raw!r} is not a decimal") from None
    if not value.is_finite():
        raise Malformed(f"{key!r}={raw!r} is not finite")
    return value


def _int(msg: dict[str, Any], key: str, required: bool = False) -> int | None:
    raw = msg.get(key)
    if raw is None:
        if required:
            raise Malformed(f"missing {key!r}")
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise Malformed(f"{key!r} is not an integer: {raw!r}")
    return raw


def _product(msg: dict[str, Any]) -> str:
    product = msg.get("product_id")
    if not isinstance(product, str) or not product:
        raise Malformed("missing 'product_id'")
    return product


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
    price = _dec(msg, "price", required=True)
    if price <= 0:
        raise Malformed(f"'price'={price} is not positive")
    side = msg.get("side")
    if side is not None and not isinstance(side, str):
        raise Malformed(f"'side'={side!r} is not a string")
    return {
        "ts": ts.astimezone(timezone.utc), "received_ts": received, "product_id": product,
        "sequence": _int(msg, "sequence", required=True), "trade_id": _int(msg, "trade_id", required=True),
        "price": price, "best_bid": _dec(msg, "best_bid"), "best_ask": _dec(msg, "best_ask"),
        "best_bid_size": _dec(msg, "best_bid_size"), "best_ask_size": _dec(msg, "best_ask_size"),
        "last_size": _dec(msg, "last_size"), "side": side,
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


class SpotCollector:
    def __init__(self, url: str, products: list[str], data_dir: Path, *, flush_seconds: float = 5.0,
                 silence_seconds: float = 10.0) -> None:
        self.url = url
        self.products = products
        # Heartbeat files let the warehouse tell a quiet or disconnected feed from files not yet arrived.
        self.writer = RawWriter(Path(data_dir) / "raw", "spot_ticks", flush_rows=2000, flush_seconds=flush_seconds,
                                heartbeat_seconds=flush_seconds)
        self.health = Health(data_dir, "spot")
        self.health.watch(self.writer)  # a failed write (disk full) keeps its rows, retries, and is counted
        self.health.extra["products"] = products
        self.health.extra["url"] = url
        self.silence_seconds = silence_seconds
        self.trades: dict[str, TradeContinuity] = {}
        self._rebase: set[str] = set()  # products whose next ticker is the first after a reconnect
        self._connected_at: float | None = None
        self._session_messages = 0
        self.stop = asyncio.Event()

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

    def handle(self, raw: str | bytes) -> None:
        """One feed message: a tick is buffered, a heartbeat checks continuity, anything broken counted and skipped."""
        received = datetime.now(timezone.utc)
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise Malformed("not a JSON object")
            kind = msg.get("type")
            if kind in ("ticker", "heartbeat"):  # the feed itself: a subscription ack after a reconnect is not data
                self.health.message()
            if kind == "ticker":
                row = parse_ticker(msg, received)
                self._ticker_trade(row["product_id"], row["trade_id"])
                self.writer.append(row)  # never dropped: even a late or repeated trade is an observation
            elif kind == "heartbeat":
                product, last_trade_id = _product(msg), _int(msg, "last_trade_id", required=True)
                self.health.counters["heartbeats"] += 1
                self._heartbeat_trade(product, last_trade_id)
            elif kind == "error":
                self.health.event("exchange_error", f"{msg.get('message')}: {msg.get('reason')}"[:200])
                log.error("feed error: %s (%s)", msg.get("message"), msg.get("reason"))
            elif kind == "subscriptions":
                log.info("subscribed: %s", msg.get("channels"))
            # Unknown types are ignored, as the feed's contract asks.
        except ValueError as exc:  # Malformed, JSONDecodeError, UnicodeDecodeError
            self.health.event("malformed", str(exc)[:200])
            log.warning("malformed message skipped (%s): %.160r", exc, raw)

    # ---- connection ---------------------------------------------------------------------------------------
    def _sync_health(self, force: bool = False) -> None:
        self.health.rows_acknowledged = self.writer.rows_flushed
        self.health.files_written = self.writer.files_written
        self.health.maybe_write(force=force)

    async def _subscribe(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "subscribe", "product_ids": self.products, "channels": ["ticker", "heartbeat"]}))

    async def _session(self) -> None:
        """Connect, subscribe and read until stopped, silent or disconnected (which raises)."""
        async with connect(self.url, open_timeout=10, ping_interval=20, close_timeout=2, max_size=2**22) as ws:
            await self._subscribe(ws)
            self._rebase = set(self.trades)
            for state in self.trades.values():  # a pending announcement now spans the reconnect
                state.announced_across = state.announced is not None
            self._connected_at = time.monotonic()
            self.health.status = "connected"
            self._sync_health(force=True)
            last_msg = time.monotonic()
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except (asyncio.TimeoutError, TimeoutError):
                    if time.monotonic() - last_msg > self.silence_seconds:
                        self.health.event("silence", f"no message for {self.silence_seconds:g}s")
                        log.warning("no message for %gs: reconnecting", self.silence_seconds)
                        break
                else:
                    last_msg = time.monotonic()
                    self._session_messages += 1
                    self.handle(raw)
                self.writer.maybe_flush()
                self._sync_health()

    async def _wait_keeping_heartbeat(self, seconds: float) -> None:
        """Back off without going quiet on disk: heartbeat files keep saying "nothing received" while we wait."""
        until = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < until:
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=min(1.0, max(until - time.monotonic(), 0.0)))
            except (asyncio.TimeoutError, TimeoutError):
                pass
            self.writer.maybe_flush()

    def _was_healthy(self) -> bool:
        return (self._connected_at is not None and self._session_messages > 0
                and time.monotonic() - self._connected_at >= HEALTHY_SECONDS)

    async def run(self, seconds: float = 0) -> None:
        if seconds > 0:
            asyncio.get_running_loop().call_later(seconds, self.stop.set)
        backoff = BACKOFF_START
        while not self.stop.is_set():
            self._connected_at, self._session_messages = None, 0
            try:
                await self._session()
            except InvalidURI:
                raise  # a configuration error: retrying cannot fix it
            except Exception as exc:  # any network/protocol failure: count, log, back off, reconnect
                self.health.event("disconnect", f"{type(exc).__name__}: {exc}"[:200])
                log.warning("connection to %s lost: %s: %s", self.url, type(exc).__name__, exc)
            if self.stop.is_set():
                break
            self.writer.flush()
            if self._was_healthy():
                backoff = BACKOFF_START
            delay = random.uniform(backoff / 2, backoff)
            self.health.status = "reconnecting"
            self.health.event("reconnect", f"after {delay:.1f}s")
            self._sync_health(force=True)
            await self._wait_keeping_heartbeat(delay)
            backoff = min(backoff * 2, BACKOFF_CAP)
        self.writer.flush()
        self.health.rows_acknowledged = self.writer.rows_flushed
        self.health.files_written = self.writer.files_written
        self.health.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    ap = argparse.ArgumentParser(prog="kalshi-shadow collect-spot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=settings.coinbase_ws_url)
    ap.add_argument("--product", action="append", help="product id (repeatable); default BTC-USD")
    ap.add_argument("--seconds", type=float, default=0, help="run this long, 0 = forever")
    ap.add_argument("--flush-seconds", type=float, default=5.0, help="max age of an unflushed batch")
    ap.add_argument("--silence-seconds", type=float, default=10.0, help="reconnect after this long without any message")
    ap.add_argument("--data-dir", type=Path, default=settings.data_dir)
    args = ap.parse_args(argv)
    c = SpotCollector(args.url, args.product or ["BTC-USD"], args.data_dir, flush_seconds=args.flush_seconds,
                      silence_seconds=args.silence_seconds)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, c.stop.set)
        await c.run(args.seconds)

    try:
        asyncio.run(go())
    except InvalidURI as exc:
        log.error("bad --url: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
