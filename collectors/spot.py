"""Coinbase Exchange WebSocket -> raw `spot_ticks`.

Subscribes to `ticker` + `heartbeat` as soon as it connects; reconnects with capped, jittered exponential backoff
(reset once a session stayed healthy) and resubscribes, like cryptofeed's connection handler; a watchdog reconnects
when nothing, not even a heartbeat, arrives for `--silence-seconds`. Per-product `sequence` rises by exactly one
across message types: a jump is recorded as a gap (expected, got), a lower one is ignored as out of order, and the
first sequence after a reconnect re-bases the count (a jump across the reconnect is still recorded as a gap).
Malformed messages are counted, logged (truncated) and skipped; heartbeats are only counted. SIGTERM/SIGINT flush,
write the final health record and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import time
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
        "sequence": _int(msg, "sequence", required=True), "trade_id": _int(msg, "trade_id"),
        "price": price, "best_bid": _dec(msg, "best_bid"), "best_ask": _dec(msg, "best_ask"),
        "best_bid_size": _dec(msg, "best_bid_size"), "best_ask_size": _dec(msg, "best_ask_size"),
        "last_size": _dec(msg, "last_size"), "side": side,
    }


class SpotCollector:
    def __init__(self, url: str, products: list[str], data_dir: Path, *, flush_seconds: float = 5.0,
                 silence_seconds: float = 10.0) -> None:
        self.url = url
        self.products = products
        # Heartbeat files let the warehouse tell a quiet or disconnected feed from files not yet arrived.
        self.writer = RawWriter(Path(data_dir) / "raw", "spot_ticks", flush_rows=2000, flush_seconds=flush_seconds,
                                heartbeat_seconds=flush_seconds)
        self.health = Health(data_dir, "spot")
        self.health.extra["products"] = products
        self.health.extra["url"] = url
        self.silence_seconds = silence_seconds
        self.last_seq: dict[str, int] = {}
        self._rebase: set[str] = set()  # products whose next sequence is the first after a reconnect
        self._connected_at: float | None = None
        self._session_messages = 0
        self.stop = asyncio.Event()

    # ---- messages -----------------------------------------------------------------------------------------
    def _sequence_ok(self, product: str, seq: int) -> bool:
        last = self.last_seq.get(product)
        if last is not None and product in self._rebase:
            self._rebase.discard(product)
            if seq > last + 1:
                self.health.gap(product, last + 1, seq, " across reconnect")
            elif seq <= last:
                self.health.event("rebase", f"{product} sequence restarted at {seq} after {last}")
                log.warning("sequence of %s restarted at %d (was %d): re-based", product, seq, last)
        elif last is not None:
            if seq <= last:
                self.health.event("out_of_order", f"{product} got {seq} after {last}")
                return False
            if seq > last + 1:
                self.health.gap(product, last + 1, seq)
                log.warning("sequence gap on %s: expected %d, got %d", product, last + 1, seq)
        self.last_seq[product] = seq
        return True

    def handle(self, raw: str | bytes) -> None:
        """One feed message: a tick is buffered, a heartbeat counted, anything broken counted and skipped."""
        received = datetime.now(timezone.utc)
        self.health.message()
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise Malformed("not a JSON object")
            kind = msg.get("type")
            if kind == "ticker":
                row = parse_ticker(msg, received)
                if self._sequence_ok(row["product_id"], row["sequence"]):
                    self.writer.append(row)
            elif kind == "heartbeat":
                product, seq = _product(msg), _int(msg, "sequence", required=True)
                self.health.counters["heartbeats"] += 1
                self._sequence_ok(product, seq)
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
            self._rebase = set(self.last_seq)
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
