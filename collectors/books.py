"""Kalshi's book stream (keyed) -> raw `kalshi_quotes` with depth, and `kalshi_lifecycle` (formats: docs `exchanges.md`).

Subscribes `orderbook_delta` for the open markets of the configured series (listed over REST, refreshed every
`REFRESH_SECONDS` and at once when `market_lifecycle_v2` announces a listing) and `market_lifecycle_v2`. Each book
is an `orderbook_snapshot` plus its deltas; `seq` must rise by one per subscription, and a gap marks every book of
the subscription stale, counts a `gap` event and asks for fresh snapshots (`update_subscription` `get_snapshot`):
deltas of a stale book are dropped until its snapshot arrives, so no row is written from a book known to be wrong.

A quote row is written when a book's top (best prices or sizes) changed and the change is whole: the deltas of one
exchange time (`ts_ms`) are one change, complete once a delta of a later time arrives on the stream (or none for
`QUIET_SECONDS`), so no row shows a half-applied change. Checked every `EMIT_SECONDS`; the row carries the
exchange's time of the last change (`ts_ms` of the delta; a snapshot's receive time) and our receive time, and the
top `depth` levels of each side (`source` 'ws_orderbook'). Depth-only changes wait for the next row: the depth
stored with a row is the book's at that row's time, and storage stays within budget (a row per top change, not per
delta). A book that stands still is restated every `RESTATE_SECONDS` ('ws_orderbook_restated', `ts` = when
restated): the sequenced stream vouches that it is still the book, so it is priced against the moving index as a
poll would be, and its `book_age_seconds` still counts from its last change.

The REST poller (`quotes.py`) stands by: it writes quotes only while this collector's health record does not say
`streaming`. Crash safety, reconnects and heartbeat files are the feed loop's (`feed.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from collectors.feed import Malformed, decimal_field, feed_main, int_field, text_field
from collectors.kalshi_socket import KalshiSocket, keyed_signer
from kalshi_shadow.config import ConfigError, Settings
from kalshi_shadow.kalshi.auth import KalshiSigner
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.raw import RawWriter

log = logging.getLogger("collectors.books")
REFRESH_SECONDS = 30.0   # re-list open markets this often (new listings come sooner through the lifecycle channel)
EMIT_SECONDS = 0.1       # dirty books are written this often, once their change is whole: ...
QUIET_SECONDS = 1.0      # ... a delta of a later exchange time arrived, or none for this long
RESTATE_SECONDS = 5.0    # an unchanged synced book is written again this often (the poll interval)
SIDES = ("yes", "no")


@dataclass
class Book:
    event_ticker: str
    series_ticker: str
    sides: dict[str, dict[Decimal, Decimal]] = field(default_factory=lambda: {"yes": {}, "no": {}})
    synced: bool = False          # from a snapshot, with every delta since
    changed_ts: datetime | None = None   # the exchange's time of the last change applied
    received_ts: datetime | None = None  # when it reached us
    dirty: bool = False
    touched: float = 0.0                 # monotonic time of the last change applied
    whole: bool = True                   # its last change is known complete (a snapshot is; a delta waits)
    last_top: tuple | None = None        # the top as last written
    last_row: float = 0.0                # monotonic time of its last row

    def levels(self, side: str, n: int) -> list[dict[str, Decimal]]:
        """The best `n` bids of a side, best (highest) first."""
        book = self.sides[side]
        return [{"price": p, "size": book[p]} for p in sorted(book, reverse=True)[:n]]


def _levels(msg: dict[str, Any], key: str) -> dict[Decimal, Decimal]:
    """A snapshot side (`[["0.0800", "300.00"], ...]`; absent = empty) as price -> size."""
    raw = msg.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise Malformed(f"{key!r} is not a list")
    out = {}
    for level in raw:
        if not isinstance(level, list) or len(level) != 2:
            raise Malformed(f"{key!r} has a malformed level: {level!r}")
        price = decimal_field({"p": level[0]}, "p", required=True)
        size = decimal_field({"s": level[1]}, "s", required=True)
        if not 0 < price < 1 or size < 0:
            raise Malformed(f"{key!r} level {level!r} is out of range")
        if size > 0:
            out[price] = size
    return out


def _change_time(msg: dict[str, Any], received: datetime) -> datetime:
    """The delta's exchange time: `ts_ms` (current), else `ts` (RFC 3339, deprecated), else when received."""
    ms = msg.get("ts_ms")
    if isinstance(ms, int) and not isinstance(ms, bool) and ms > 0:
        return datetime.fromtimestamp(ms // 1000, tz=timezone.utc).replace(microsecond=(ms % 1000) * 1000)
    if isinstance(msg.get("ts"), str):
        try:
            return datetime.fromisoformat(msg["ts"].replace("Z", "+00:00"))
        except ValueError:
            raise Malformed(f"'ts'={msg['ts']!r} is not a time") from None
    return received


class BookCollector(KalshiSocket):
    name = "books"
    table = "kalshi_quotes"
    keepalive_seconds = EMIT_SECONDS  # the session loop calls `keepalive` this often: writes rows, sends commands

    def __init__(self, url: str, data_dir: Path, signer: KalshiSigner, client: KalshiClient, series: list[str], *,
                 depth: int = 3, **kw) -> None:
        super().__init__(url, data_dir, signer, **kw)
        self.client = client
        self.series = series
        self.depth = depth
        # Lifecycle events are rare and no pricing input waits for them: a file when there are some, a heartbeat a minute.
        self.lifecycle = RawWriter(Path(data_dir) / "raw", "kalshi_lifecycle", flush_rows=2000,
                                   flush_seconds=self.writer.flush_seconds, heartbeat_seconds=60.0)
        self.health.watch(self.lifecycle)
        self.health.extra.update({"series": series, "depth": depth, "streaming": False})
        self.books: dict[str, Book] = {}
        self.book_sid: int | None = None
        self.seqs: dict[int, int] = {}
        self._cmd = 0
        self._outbox: list[dict] = []
        self._refresh_at = 0.0
        self._listing: asyncio.Task | None = None
        self.stream_ts: datetime | None = None  # the latest exchange time of a delta received

    # ---- subscriptions --------------------------------------------------------------------------------------
    def _command(self, cmd: str, params: dict) -> dict:
        self._cmd += 1
        return {"id": self._cmd, "cmd": cmd, "params": params}

    async def _open_markets(self) -> dict[str, tuple[str, str]]:
        """ticker -> (event, series) of every open market of the configured series, over REST (in a thread)."""
        def fetch() -> dict[str, tuple[str, str]]:
            return {m.ticker: (m.event_ticker, s) for s in self.series for m in self.client.iter_markets(series_ticker=s, status="open")}
        return await asyncio.to_thread(fetch)

    async def subscribe(self, ws: ClientConnection) -> None:
        """A new connection: every book starts again from a snapshot (subscriptions and `seq` do not survive)."""
        if self._listing is not None and not self._listing.done():
            self._listing.cancel()  # a listing of the last connection must not touch this one's books
        self.books.clear()
        self.seqs.clear()
        self.book_sid = None
        self._outbox.clear()
        listed = await self._open_markets()
        for ticker, (event, series) in listed.items():
            self.books[ticker] = Book(event, series)
        await ws.send(json.dumps(self._command("subscribe", {"channels": ["market_lifecycle_v2"]})))
        if listed:
            await ws.send(json.dumps(self._command("subscribe", {"channels": ["orderbook_delta"], "market_tickers": sorted(listed)})))
        self._refresh_at = time.monotonic() + REFRESH_SECONDS

    async def _follow_listings(self) -> None:
        """Add newly listed markets and drop closed ones."""
        try:
            listed = await self._open_markets()
        except Exception as exc:  # noqa: BLE001 - tried again at the next refresh; the books stream on
            self.health.event("poll_failed", f"markets: {type(exc).__name__}: {exc}"[:200])
            return
        new = sorted(set(listed) - set(self.books))
        gone = sorted(set(self.books) - set(listed))
        for t in new:
            self.books[t] = Book(*listed[t])
        for t in gone:  # closed: a change still pending (its book emptied at the close) gets its row first
            b = self.books.pop(t)
            if b.synced and b.dirty:
                b.whole = True
                self._row(t, b, time.monotonic(), datetime.now(timezone.utc))
        if self.book_sid is None:
            if new or (self.books and not any(b.synced for b in self.books.values())):
                self._outbox.append(self._command("subscribe", {"channels": ["orderbook_delta"], "market_tickers": sorted(self.books)}))
            return
        if new:
            self._outbox.append(self._command("update_subscription", {"sids": [self.book_sid], "market_tickers": new, "action": "add_markets"}))
        if gone:
            self._outbox.append(self._command("update_subscription", {"sids": [self.book_sid], "market_tickers": gone, "action": "delete_markets"}))

    async def keepalive(self, ws: ClientConnection) -> None:
        if time.monotonic() >= self._refresh_at and (self._listing is None or self._listing.done()):
            self._refresh_at = time.monotonic() + REFRESH_SECONDS
            self._listing = asyncio.create_task(self._follow_listings())
        while self._outbox:
            await ws.send(json.dumps(self._outbox.pop(0)))
        self.emit()

    # ---- messages -------------------------------------------------------------------------------------------
    def _sequence(self, sid: int, seq: int | None) -> bool:
        """True if `seq` follows the subscription's last; a gap marks its books stale and asks for snapshots."""
        if seq is None:
            return True
        last = self.seqs.get(sid)
        self.seqs[sid] = seq if last is None else max(last, seq)
        if last is None or seq == last + 1:
            return True
        if seq <= last:
            self.health.event("out_of_order", f"sid {sid} seq {seq} after {last}")
            return False
        self.health.gap(f"orderbook_delta sid {sid}", last + 1, seq)
        log.warning("books: seq gap on sid %s (%d missed): re-snapshotting its books", sid, seq - last - 1)
        stale = sorted(t for t, b in self.books.items() if b.synced)
        for t in stale:
            self.books[t].synced = False
        if stale:
            self._outbox.append(self._command("update_subscription", {"sids": [sid], "market_tickers": stale, "action": "get_snapshot"}))
        self.health.counters["resnapshots"] = self.health.counters.get("resnapshots", 0) + 1
        return True

    def on_message(self, msg: dict[str, Any], received: datetime) -> None:
        kind = msg.get("type")
        body = msg.get("msg")
        if kind in ("orderbook_snapshot", "orderbook_delta"):
            self.health.message()
            if not isinstance(body, dict):
                raise Malformed("'msg' is not an object")
            sid = int_field(msg, "sid", required=True)
            if not self._sequence(sid, int_field(msg, "seq")):
                return  # a repeat or out of order: already applied, or overtaken (counted)
            book = self.books.get(text_field(body, "market_ticker"))
            if book is None:
                return  # a market we no longer follow
            if kind == "orderbook_snapshot":
                book.sides = {side: _levels(body, f"{side}_dollars_fp") for side in SIDES}
                book.synced, book.changed_ts, book.whole = True, received, True
            else:
                if not book.synced:
                    return  # stale: waiting for its snapshot
                side = body.get("side")
                if side not in SIDES:
                    raise Malformed(f"'side'={side!r}")
                price = decimal_field(body, "price_dollars", required=True)
                delta = decimal_field(body, "delta_fp", required=True)
                at = _change_time(body, received)
                if book.dirty and not book.whole and book.changed_ts < at:  # its earlier change is whole: its row first
                    book.whole = True
                    self._row(body["market_ticker"], book, time.monotonic(), received)
                size = book.sides[side].get(price, Decimal(0)) + delta
                if size < 0:
                    book.synced = False  # the book is wrong: count it and start it again from a snapshot
                    self._outbox.append(self._command("update_subscription", {"sids": [sid], "market_tickers": [body["market_ticker"]],
                                                                              "action": "get_snapshot"}))
                    raise Malformed(f"delta leaves {body['market_ticker']} {side} {price} at {size}")
                if size == 0:
                    book.sides[side].pop(price, None)
                else:
                    book.sides[side][price] = size
                book.changed_ts, book.whole = at, False
                if self.stream_ts is None or book.changed_ts > self.stream_ts:
                    self.stream_ts = book.changed_ts
            book.received_ts, book.dirty, book.touched = received, True, time.monotonic()
        elif kind == "market_lifecycle_v2":
            self.health.message()
            self._lifecycle(body, received)
        elif kind == "subscribed":
            sub = body if isinstance(body, dict) else msg
            if sub.get("channel") == "orderbook_delta":
                self.book_sid = sub.get("sid")
                log.info("books: streaming %d markets (sid %s)", len(self.books), self.book_sid)
        elif kind in ("ok", "unsubscribed"):
            # Replies to update_subscription / unsubscribe take a number in the subscription's sequence too.
            if isinstance(msg.get("sid"), int) and isinstance(msg.get("seq"), int):
                self._sequence(msg["sid"], msg["seq"])
        elif kind == "error":
            self.health.event("exchange_error", str(body)[:200])
            log.error("books: error from Kalshi: %s", body)
        # ticker / anything else: nothing to do

    def _lifecycle(self, body: Any, received: datetime) -> None:
        if not isinstance(body, dict):
            raise Malformed("'msg' is not an object")
        ticker, event_type = text_field(body, "market_ticker"), text_field(body, "event_type")
        if ticker not in self.books and not any(ticker.startswith(s + "-") for s in self.series):
            return  # another series
        at = next((body[k] for k in ("determination_ts", "settled_ts") if isinstance(body.get(k), int)), None)
        self.lifecycle.append({"ts": datetime.fromtimestamp(at, tz=timezone.utc) if at else received, "received_ts": received,
                               "ticker": ticker, "event_type": event_type, "result": body.get("result") or None,
                               "settlement_value": decimal_field(body, "settlement_value"),
                               "raw_json": json.dumps(body, separators=(",", ":"))})
        if event_type == "created":
            self._refresh_at = 0.0  # list it (terms, event, series) and subscribe its book now

    # ---- rows -----------------------------------------------------------------------------------------------
    def emit(self) -> None:
        """A row for every synced book whose top changed since its last row, or that stood still RESTATE_SECONDS."""
        now, wall = time.monotonic(), datetime.now(timezone.utc)
        for ticker, b in self.books.items():
            if not b.synced or (not b.dirty and now - b.last_row < RESTATE_SECONDS):
                continue
            if b.dirty and not b.whole:
                if b.changed_ts >= self.stream_ts and now - b.touched < QUIET_SECONDS:
                    continue  # more deltas of its exchange time may come: a half-applied change is no book it had
                b.whole = True
            self._row(ticker, b, now, wall)
        self._status()
    def _row(self, ticker: str, b: Book, now: float, wall: datetime) -> None:
        """Write the book's row if its top changed (at its change time) or it is due a restatement (now)."""
        yes, no = b.levels("yes", self.depth), b.levels("no", self.depth)
        top = (yes[:1], no[:1])
        if b.dirty and top != b.last_top:
            ts, seen, source = b.changed_ts, b.received_ts, "ws_orderbook"
        elif now - b.last_row >= RESTATE_SECONDS:
            ts, seen, source = wall, wall, "ws_orderbook_restated"
        else:
            b.dirty = False
            return
        b.dirty, b.last_top, b.last_row = False, top, now
        yb, nb = (yes[0] if yes else None), (no[0] if no else None)
        self.writer.append({
            "ts": ts, "received_ts": seen, "ticker": ticker, "event_ticker": b.event_ticker,
            "series_ticker": b.series_ticker, "status": None,
            "yes_bid": yb and yb["price"], "yes_ask": nb and 1 - nb["price"],
            "no_bid": nb and nb["price"], "no_ask": yb and 1 - yb["price"],
            "yes_bid_size": yb and yb["size"], "yes_ask_size": nb and nb["size"],  # an empty side: NULL, as REST
            "last_price": None, "volume": None, "open_interest": None, "source": source,
            "yes_bid_levels": yes, "no_bid_levels": no, "seq": self.seqs.get(self.book_sid or -1)})

    def _status(self) -> None:
        """The health record's view of the stream. Streaming: subscribed on a live connection. Books re-snapshotting
        after a gap (a fraction of a second) do not hand the quotes back to the poller; a lost connection does."""
        self.health.extra["streaming"] = self.book_sid is not None
        self.health.extra["books_synced"] = sum(b.synced for b in self.books.values())
        self.health.extra["books"] = len(self.books)
        self.lifecycle.maybe_flush()

    async def run(self, seconds: float = 0) -> None:
        try:
            await super().run(seconds)
        finally:
            self.health.extra["streaming"] = False
            self.lifecycle.flush()


def _make(args, settings: Settings) -> BookCollector:
    signer = keyed_signer(settings, "collect-books")
    series = [s.strip() for s in args.series.split(",") if s.strip()]
    if not series or args.depth < 1:
        raise ConfigError("--series needs at least one ticker and --depth must be >= 1")
    client = KalshiClient(settings.kalshi_base_url, signer=signer)
    return BookCollector(args.url, args.data_dir, signer, client, series, depth=args.depth,
                         flush_seconds=args.flush_seconds, silence_seconds=args.silence_seconds)


def _extra(ap) -> None:
    settings = Settings.from_env()
    ap.add_argument("--series", default=",".join(settings.series), help="comma-separated series tickers")
    ap.add_argument("--depth", type=int, default=settings.book_depth, help="levels stored per side (KALSHI_SHADOW_BOOK_DEPTH)")
    ap.set_defaults(flush_seconds=2.0, silence_seconds=30.0)  # a file every 2 s: the live tick (30 s) reads them


def main(argv: list[str]) -> int:
    return feed_main(argv, "kalshi-shadow collect-books", __doc__, lambda s: s.kalshi_ws_url, _make, _extra)


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
