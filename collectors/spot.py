"""Coinbase Exchange WebSocket -> raw `spot_ticks`.

Subscribes to `ticker` + `heartbeat`; reconnects with capped, jittered exponential backoff and resubscribes; a
watchdog reconnects when nothing (not even a heartbeat) arrives for `--silence-seconds`. Per-product `sequence`
rises by exactly one across message types: a jump is recorded as a gap, a lower one is ignored as out of order.
Malformed messages are counted, logged and skipped. SIGTERM/SIGINT flush and exit 0.
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

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from collectors.health import Health
from kalshi_shadow.config import Settings
from kalshi_shadow.raw import RawWriter

log = logging.getLogger("collectors.spot")


class Malformed(ValueError):
    pass


def _dec(msg: dict[str, Any], key: str, required: bool = False) -> Decimal | None:
    raw = msg.get(key)
    if raw is None or raw == "":
        if required:
            raise Malformed(f"missing {key!r}")
        return None
    if not isinstance(raw, str):
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


def parse_ticker(msg: dict[str, Any], received: datetime) -> dict[str, Any]:
    """A `ticker` message as a `spot_ticks` row; raises Malformed on a missing or invalid field."""
    product = msg.get("product_id")
    if not isinstance(product, str) or not product:
        raise Malformed("missing 'product_id'")
    raw_time = msg.get("time")
    try:
        ts = datetime.fromisoformat(str(raw_time).replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"'time'={raw_time!r} is not ISO-8601") from None
    if ts.tzinfo is None:
        raise Malformed(f"'time'={raw_time!r} has no timezone")
    price = _dec(msg, "price", required=True)
    if price <= 0:
        raise Malformed(f"'price'={price} is not positive")
    return {
        "ts": ts, "received_ts": received, "product_id": product,
        "sequence": _int(msg, "sequence", required=True), "trade_id": _int(msg, "trade_id"),
        "price": price, "best_bid": _dec(msg, "best_bid"), "best_ask": _dec(msg, "best_ask"),
        "best_bid_size": _dec(msg, "best_bid_size"), "best_ask_size": _dec(msg, "best_ask_size"),
        "last_size": _dec(msg, "last_size"), "side": msg.get("side") if isinstance(msg.get("side"), str) else None,
    }


class SpotCollector:
    def __init__(self, url: str, products: list[str], data_dir: Path, *, flush_seconds: float = 5.0, silence_seconds: float = 10.0) -> None:
        self.url = url
        self.products = products
        self.writer = RawWriter(Path(data_dir) / "raw", "spot_ticks", flush_rows=2000, flush_seconds=flush_seconds)
        self.health = Health(data_dir, "spot")
        self.silence_seconds = silence_seconds
        self.last_seq: dict[str, int] = {}
        self.stop = asyncio.Event()

    def _sync_health(self) -> None:
        self.health.rows_acknowledged = self.writer.rows_flushed
        self.health.files_written = self.writer.files_written
        self.health.maybe_write()

    def _sequence_ok(self, product: str, seq: int) -> bool:
        last = self.last_seq.get(product)
        if last is not None:
            if seq <= last:
                self.health.event("out_of_order", f"{product} got {seq} after {last}")
                return False
            if seq > last + 1:
                self.health.gaps += 1
                self.health.missed_messages += seq - last - 1
                self.health.event("gap", f"{product} expected {last + 1} got {seq}")
                log.warning("sequence gap on %s: expected %d, got %d", product, last + 1, seq)
        self.last_seq[product] = seq
        return True

    def handle(self, raw: str | bytes) -> None:
        received = datetime.now(timezone.utc)
        self.health.message()
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise Malformed(f"not an object: {str(raw)[:80]!r}")
            kind = msg.get("type")
            if kind == "ticker":
                row = parse_ticker(msg, received)
                if self._sequence_ok(row["product_id"], row["sequence"]):
                    self.writer.append(row)
            elif kind == "heartbeat":
                product, seq = msg.get("product_id"), _int(msg, "sequence", required=True)
                if not isinstance(product, str):
                    raise Malformed("heartbeat without 'product_id'")
                self._sequence_ok(product, seq)
            elif kind == "error":
                self.health.event("exchange_error", str(msg.get("message"))[:200])
                log.error("feed error: %s %s", msg.get("message"), msg.get("reason"))
            # `subscriptions` and unknown types are ignored, as the feed's contract asks.
        except (ValueError, Malformed) as exc:
            self.health.event("malformed", str(exc)[:200])
            log.warning("malformed message skipped (%s): %.120r", exc, raw)

    async def _session(self) -> None:
        async with connect(self.url, open_timeout=10, ping_interval=20, close_timeout=2, max_size=2**22) as ws:
            await ws.send(json.dumps({"type": "subscribe", "product_ids": self.products, "channels": ["ticker", "heartbeat"]}))
            self.health.status = "connected"
            last_msg = time.monotonic()
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except (asyncio.TimeoutError, TimeoutError):
                    if time.monotonic() - last_msg > self.silence_seconds:
                        self.health.event("silence", f"no message for {self.silence_seconds:.0f}s")
                        log.warning("no message for %.0fs: reconnecting", self.silence_seconds)
                        return
                else:
                    last_msg = time.monotonic()
                    self.handle(raw)
                self.writer.maybe_flush()
                self._sync_health()

    async def run(self, seconds: float = 0) -> None:
        deadline = time.monotonic() + seconds if seconds > 0 else None
        backoff = 0.5
        loop = asyncio.get_running_loop()
        if deadline:
            loop.call_later(seconds, self.stop.set)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError, TimeoutError) as exc:
                self.health.event("disconnect", f"{type(exc).__name__}: {exc}"[:200])
                log.warning("connection lost: %s", exc)
            except InvalidURI:
                raise
            if self.stop.is_set():
                break
            self.health.status = "reconnecting"
            self.writer.flush()
            self._sync_health()
            if time.monotonic() - started > 60:
                backoff = 0.5  # it was healthy for a while: start the ladder again
            delay = random.uniform(backoff / 2, backoff)
            self.health.event("reconnect", f"after {delay:.1f}s")
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            except (asyncio.TimeoutError, TimeoutError):
                pass
            backoff = min(backoff * 2, 30.0)
        self.writer.flush()
        self.health.status = "stopped"
        self.health.rows_acknowledged = self.writer.rows_flushed
        self.health.files_written = self.writer.files_written
        self.health.maybe_write(force=True)


def main(argv: list[str]) -> int:
    settings = Settings.from_env()
    ap = argparse.ArgumentParser(prog="kalshi-shadow collect-spot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=settings.coinbase_ws_url)
    ap.add_argument("--product", action="append", help="product id (repeatable); default BTC-USD")
    ap.add_argument("--seconds", type=float, default=0, help="run this long, 0 = forever")
    ap.add_argument("--flush-seconds", type=float, default=5.0, help="max age of an unflushed batch")
    ap.add_argument("--silence-seconds", type=float, default=10.0, help="reconnect after this long without a message")
    ap.add_argument("--data-dir", type=Path, default=settings.data_dir)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    c = SpotCollector(args.url, args.product or ["BTC-USD"], args.data_dir, flush_seconds=args.flush_seconds, silence_seconds=args.silence_seconds)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, c.stop.set)
        await c.run(args.seconds)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
