"""What every WebSocket spot collector shares: connect, subscribe, read, reconnect, and stay on disk while it does.

Like cryptofeed's connection handler, the loop lives here and each venue's handler (`spot.py` Coinbase,
`kraken.py`, `bitstamp.py`) only subscribes and parses. It reconnects with capped, jittered exponential backoff
(reset once a session stayed healthy) and resubscribes; a watchdog reconnects when nothing, not even a heartbeat,
arrives for `silence_seconds`. While it waits the raw writer keeps writing heartbeat files, so the warehouse can
tell a quiet or disconnected venue from files not yet arrived. A write that fails (disk full) loses nothing: the
writer keeps the rows and their file's sequence number and retries, each failure counted as a `write_failed` event.
SIGTERM/SIGINT flush, write the final health record and exit 0.
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
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI

from collectors.health import Health
from kalshi_shadow.config import ConfigError, Settings
from kalshi_shadow.raw import RawWriter

log = logging.getLogger("collectors.feed")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
HEALTHY_SECONDS = 30.0  # a session that delivered messages this long resets the backoff ladder


class Malformed(ValueError):
    pass


class Reconnect(Exception):
    """The venue asked us to reconnect (e.g. Bitstamp's `bts:request_reconnect`)."""


def decimal_field(msg: dict[str, Any], key: str, *, required: bool = False, strings_only: bool = True) -> Decimal | None:
    """An exact decimal from a message field (a JSON string, or a number if the venue sends numbers and the message
    was parsed with `parse_float=Decimal`); raises Malformed if required and missing, or not a finite decimal."""
    raw = msg.get(key)
    if raw is None or raw == "":
        if required:
            raise Malformed(f"missing {key!r}")
        return None
    if isinstance(raw, bool) or (strings_only and not isinstance(raw, str)) or not isinstance(raw, (str, int, Decimal)):
        raise Malformed(f"{key!r} is not a decimal{' string' if strings_only else ''}: {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise Malformed(f"{key!r}={raw!r} is not a decimal") from None
    if not value.is_finite():
        raise Malformed(f"{key!r}={raw!r} is not finite")
    return value


def text_field(msg: dict[str, Any], key: str) -> str:
    """A required non-empty string field (a symbol, a product or index id); raises Malformed otherwise."""
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(f"missing {key!r}")
    return value


def int_field(msg: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    raw = msg.get(key)
    if raw is None:
        if required:
            raise Malformed(f"missing {key!r}")
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise Malformed(f"{key!r} is not an integer: {raw!r}")
    return raw


def positive_price(msg: dict[str, Any], key: str = "price", *, strings_only: bool = True) -> Decimal:
    price = decimal_field(msg, key, required=True, strings_only=strings_only)
    if price <= 0:
        raise Malformed(f"{key!r}={price} is not positive")
    return price


class FeedCollector:
    """One venue's WebSocket session loop around a raw writer and a health record. Subclasses implement
    `subscribe(ws)` and `on_message(msg, received)`; they may override `on_connected()` and `keepalive(ws)`."""

    name = "feed"          # the health record's name and the `collector` of its events
    table = ""             # the raw table it writes
    keepalive_seconds = 0.0  # >0: call `keepalive(ws)` this often (a venue without server heartbeats)
    exact_numbers = False  # parse JSON numbers as exact Decimals (a venue that sends prices as numbers)
    newest: Any = None     # the newest ordering key seen (a trade id, a value's time): see `note_order`

    def __init__(self, url: str, data_dir: Path, *, flush_seconds: float = 5.0, silence_seconds: float = 10.0) -> None:
        self.url = url
        self.writer = RawWriter(Path(data_dir) / "raw", self.table, flush_rows=2000, flush_seconds=flush_seconds,
                                heartbeat_seconds=flush_seconds)
        self.health = Health(data_dir, self.name)
        self.health.watch(self.writer)  # a failed write (disk full) keeps its rows, retries, and is counted
        self.health.extra["url"] = url
        self.silence_seconds = silence_seconds
        self._connected_at: float | None = None
        self._session_messages = 0
        self.stop = asyncio.Event()

    # ---- venue hooks --------------------------------------------------------------------------------------
    async def subscribe(self, ws: ClientConnection) -> None:
        raise NotImplementedError

    def on_message(self, msg: dict[str, Any], received: datetime) -> None:
        """One message, a JSON object, received at `received`; raise Malformed (a ValueError) if it is broken."""
        raise NotImplementedError

    def handle(self, raw: str | bytes) -> None:
        """Parse one frame and pass it on; anything broken is counted, logged and skipped, never a crash."""
        received = datetime.now(timezone.utc)
        try:
            msg = loads_exact(raw) if self.exact_numbers else json.loads(raw)
            if not isinstance(msg, dict):
                raise Malformed("not a JSON object")
            self.on_message(msg, received)
        except ValueError as exc:  # Malformed, JSONDecodeError, UnicodeDecodeError
            self.malformed(exc, raw)

    def on_connected(self) -> None:
        """Called once a new session has subscribed."""

    async def keepalive(self, ws: ClientConnection) -> None:
        """Sent every `keepalive_seconds` on venues that need it."""

    def connect_headers(self) -> dict[str, str] | None:
        """Extra handshake headers, made anew for each connection (a venue that signs its handshake)."""
        return None

    def note_order(self, key: Any, what: str) -> bool:
        """True if `key` moves the newest on; otherwise an `out_of_order` event is counted and the newest kept (the row
        itself is kept: the warehouse dedups by its natural key)."""
        if self.newest is not None and key <= self.newest:
            self.health.event("out_of_order", f"{what} after {self.newest}")
            return False
        self.newest = key
        return True

    def malformed(self, exc: Exception, raw: str | bytes) -> None:
        self.health.event("malformed", str(exc)[:200])
        log.warning("%s: malformed message skipped (%s): %.160r", self.name, exc, raw)

    # ---- connection ---------------------------------------------------------------------------------------
    def _sync_health(self, force: bool = False) -> None:
        self.health.rows_acknowledged = self.writer.rows_flushed
        self.health.files_written = self.writer.files_written
        self.health.maybe_write(force=force)

    async def _session(self) -> None:
        """Connect, subscribe and read until stopped, silent or disconnected (which raises)."""
        async with connect(self.url, additional_headers=self.connect_headers(), open_timeout=10, ping_interval=20,
                           close_timeout=2, max_size=2**22) as ws:
            await self.subscribe(ws)
            self.on_connected()
            self._connected_at = time.monotonic()
            self.health.status = "connected"
            self._sync_health(force=True)
            last_msg = next_keepalive = time.monotonic()
            while not self.stop.is_set():
                if self.keepalive_seconds and time.monotonic() >= next_keepalive:
                    next_keepalive = time.monotonic() + self.keepalive_seconds
                    await self.keepalive(ws)
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except (asyncio.TimeoutError, TimeoutError):
                    if time.monotonic() - last_msg > self.silence_seconds:
                        self.health.event("silence", f"no message for {self.silence_seconds:g}s")
                        log.warning("%s: no message for %gs: reconnecting", self.name, self.silence_seconds)
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
            except Reconnect as exc:  # asked for: at once, without counting it as a failure
                self.health.event("reconnect_requested", str(exc)[:200])
                log.info("%s: %s: reconnecting", self.name, exc)
                backoff = BACKOFF_START / 2
            except Exception as exc:  # any network/protocol failure: count, log, back off, reconnect
                self.health.event("disconnect", f"{type(exc).__name__}: {exc}"[:200])
                log.warning("%s: connection to %s lost: %s: %s", self.name, self.url, type(exc).__name__, exc)
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


def feed_args(prog: str, doc: str, default_url: str, data_dir: Path) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=default_url)
    ap.add_argument("--seconds", type=float, default=0, help="run this long, 0 = forever")
    ap.add_argument("--flush-seconds", type=float, default=5.0, help="max age of an unflushed batch")
    ap.add_argument("--silence-seconds", type=float, default=10.0, help="reconnect after this long without any message")
    ap.add_argument("--data-dir", type=Path, default=data_dir)
    return ap


def feed_main(argv: list[str], prog: str, doc: str, default_url: Callable[[Settings], str],
              make: Callable[[argparse.Namespace, Settings], FeedCollector],
              extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """A feed collector's command: settings from the environment, the shared options (`feed_args`), then run the
    collector `make` builds; 2 with a logged message on a configuration error (`make` may raise ConfigError)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
        ap = feed_args(prog, doc, default_url(settings), settings.data_dir)
        if extra_args is not None:
            extra_args(ap)
        args = ap.parse_args(argv)
        collector = make(args, settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return run_collector(collector, args.seconds)


def run_collector(collector: FeedCollector, seconds: float) -> int:
    """Run until `seconds` pass (0: forever) or SIGTERM/SIGINT; 2 on a bad URL."""

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, collector.stop.set)
        await collector.run(seconds)

    try:
        asyncio.run(go())
    except InvalidURI as exc:
        log.error("bad --url: %s", exc)
        return 2
    return 0


def loads_exact(raw: str | bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal (venues that send prices as JSON numbers)."""
    return json.loads(raw, parse_float=Decimal)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
