"""Kalshi's Trade API WebSocket (`/trade-api/ws/v2`), as far as the platform reads it (formats: docs `exchanges.md`).

The market channels (`orderbook_delta`, `ticker`, `market_lifecycle_v2`) are built in `kalshi_channels.py`; this
module numbers and sends them. Books are diffed once a second (the maker requotes on whole seconds). Faults:
`drop_delta` (the next N deltas are numbered but not sent: a `seq` gap), `drop_kalshi_ws` (close every connection).

- **Auth.** The handshake must carry the three signed headers over `timestamp + "GET" + "/trade-api/ws/v2"`, checked
  like a REST request (`kalshi_api.signature_error`); otherwise the upgrade is refused with 401.
- **Commands.** `{"id", "cmd": "subscribe", "params": {"channels": [...], "index_ids": [...]}}` is answered
  `{"id", "type": "subscribed", "sid"}`; `update_subscription` with `action` `subscribe_indices`,
  `unsubscribe_indices` (both need `index_ids`, else error code 24) or `indexlist`; an unknown command or channel is
  `{"id", "type": "error", "msg": {"code", "msg"}}`.
- **`cfbenchmarks_value`.** Once a second, per subscription tracking BRTI: `{"type": "cfbenchmarks_value", "sid",
  "seq", "msg": {index_id, received_at, data, avg_60s_data, last_60s_windowed_average_15min?}}`. `data` is the raw
  CF frame as a JSON string (`time`, `value` in cents: the index as published, which settlement averages);
  `avg_60s_data` averages the ticks in [t - 60 s, t) (the current one alone if none); the final-minute average,
  present only in the last minute before :00/:15/:30/:45, averages (close - 60 s, t]. Averages are strings with 8
  decimals; `window_size` counts ticks. The feed goes quiet while the fault `venue_silence={"cfbenchmarks": s}` holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kalshi_shadow.sim import kalshi_channels as ch
from kalshi_shadow.sim.exchange import Exchange
from kalshi_shadow.sim.faults import Faults
from kalshi_shadow.sim.kalshi_api import signature_error

log = logging.getLogger(__name__)

WS_PATH = "/trade-api/ws/v2"
CHANNEL = "cfbenchmarks_value"
FEED = "cfbenchmarks"  # its name for the silence fault
INDICES = ("BRTI",)
QUARTER = 900
CATCH_UP = 5  # after a stall (a manual clock's jump), publish at most this many past seconds


def _avg(values: list[Decimal], start_ms: int, end_ms: int) -> dict:
    return {"value": f"{sum(values) / len(values):.8f}", "window_size": len(values),
            "window_start_ts_ms": start_ms, "window_end_ts_exclusive": end_ms}


MARKET_CHANNELS = ("orderbook_delta", "ticker", "market_lifecycle_v2")


@dataclass
class Subscription:
    sid: int
    ws: ServerConnection
    indices: set[str] = field(default_factory=set)
    seq: int = 0
    channel: str = CHANNEL
    markets: set[str] = field(default_factory=set)       # orderbook_delta / ticker: the markets asked for
    books: dict[str, ch.Book] = field(default_factory=dict)  # orderbook_delta: the book as last sent per market
    tops: dict[str, tuple] = field(default_factory=dict)     # ticker: the top as last sent per market

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class KalshiWS:
    def __init__(self, exchange: Exchange, faults: Faults, *, api_key_id: str | None, public_key) -> None:
        self.x = exchange
        self.faults = faults
        self.api_key_id = api_key_id
        self.public_key = public_key
        self.subs: dict[int, Subscription] = {}
        self._next_sid = 0
        self.connections_total = 0
        self.refused_total = 0
        self._status: dict[str, str] = {}  # market -> status at the last second (lifecycle changes)
        self._lifecycle_started = False

    # ---- the index -------------------------------------------------------------------------------------------
    def value_message(self, second: int) -> dict:
        """The `msg` of BRTI's value at `second`, with its averages."""
        value = self.x.published(second)
        ms = second * 1000
        prior = [self.x.published(s) for s in range(second - 59, second)]
        msg = {"index_id": "BRTI", "received_at": ms + 18,
               "data": json.dumps({"type": "value", "id": "BRTI", "time": ms, "value": f"{value:.2f}"}),
               "avg_60s_data": _avg(prior or [value], ms - 60_000, ms)}
        close = -(-second // QUARTER) * QUARTER  # the quarter hour this second counts toward
        if close - second < 60:
            window = [self.x.published(s) for s in range(close - 59, second + 1)]
            msg["last_60s_windowed_average_15min"] = _avg(window, (close - 60) * 1000, ms + 1)
        return msg

    async def pump(self) -> None:
        last = int(self.x.clock.now()) - 1
        while True:
            now = self.x.clock.now()
            await asyncio.sleep(max(0.05, 1.0 - (now - int(now))))  # just after the next whole second
            second = int(self.x.clock.now())
            for s in range(max(last + 1, second - CATCH_UP + 1), second + 1):
                if not self.faults.silent(FEED):
                    await self._publish(s)
            if second > last:
                await self._markets(second)
            last = max(last, second)

    async def _publish(self, second: int) -> None:
        msg = None
        for sub in list(self.subs.values()):
            if sub.channel != CHANNEL or "BRTI" not in sub.indices:
                continue
            msg = msg or self.value_message(second)
            await self._send(sub, {"type": CHANNEL, "sid": sub.sid, "seq": sub.next_seq(), "msg": msg})

    # ---- the market channels ---------------------------------------------------------------------------------
    async def _send(self, sub: Subscription, body: dict) -> None:
        try:
            await sub.ws.send(json.dumps(body))
        except ConnectionClosed:
            self.subs.pop(sub.sid, None)

    async def _markets(self, second: int) -> None:
        """Each book's changes since it was last sent, the tops that changed, and lifecycle changes, at `second`."""
        if self.faults.take("drop_kalshi_ws"):
            for ws in {sub.ws for sub in self.subs.values()}:
                await ws.close(code=1011, reason="simulated disconnect")
            self.subs.clear()
        books: dict[str, ch.Book] = {}

        def book(ticker: str):
            if ticker not in books:
                m = self.x.market(ticker)
                books[ticker] = self.x.book(m, second) if m is not None else ([], [])
            return books[ticker]

        lifecycle = self._lifecycle_changes(second)
        for sub in list(self.subs.values()):
            if sub.channel == "orderbook_delta":
                for ticker in sorted(sub.markets):
                    m = self.x.market(ticker)
                    new = book(ticker)
                    for d in ch.deltas(m, sub.books.get(ticker, ([], [])), new, second):
                        seq = sub.next_seq()
                        if self.faults.take("drop_delta"):
                            continue  # numbered, never sent: the client sees a gap
                        await self._send(sub, {"type": "orderbook_delta", "sid": sub.sid, "seq": seq, "msg": d})
                    sub.books[ticker] = new
            elif sub.channel == "ticker":
                for ticker in sorted(sub.markets):
                    new = book(ticker)
                    top = (new[0][:1], new[1][:1])
                    if sub.tops.get(ticker) != top:
                        sub.tops[ticker] = top
                        await self._send(sub, {"type": "ticker", "sid": sub.sid,
                                               "msg": ch.ticker_msg(self.x, self.x.market(ticker), new, second)})
            elif sub.channel == "market_lifecycle_v2":
                for msg in lifecycle:
                    await self._send(sub, {"type": "market_lifecycle_v2", "sid": sub.sid, "msg": msg})

    def _lifecycle_changes(self, second: int) -> list[dict]:
        """Lifecycle messages of every market listed or changed since the last second (the channel is global)."""
        out = []
        live = set()
        for ev in self.x.events():
            if ev.close_ts + self.x.finalize_after + 120 < second:
                continue  # long finalized
            for m in ev.markets:
                live.add(m.ticker)
                status = self.x.status(m, second)
                before = self._status.get(m.ticker)
                self._status[m.ticker] = status
                if before is None and not self._lifecycle_started:
                    continue  # listed before the simulator started serving
                msg = ch.lifecycle_msg(self.x, m, None, second) if before is None else (
                    ch.lifecycle_msg(self.x, m, status, second) if before != status else None)
                if msg is not None:
                    out.append(msg)
        self._lifecycle_started = True
        for ticker in set(self._status) - live:  # memory stays flat: finalized markets are forgotten
            del self._status[ticker]
        return out

    # ---- the connection ---------------------------------------------------------------------------------------
    def process_request(self, connection: ServerConnection, request):
        """Refuse an unsigned or badly signed handshake, or another path, before the upgrade."""
        path = request.path.split("?", 1)[0]
        if path != WS_PATH:
            self.refused_total += 1
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        error = signature_error(self.public_key, self.api_key_id, request.headers, "GET", path)
        if error:
            self.refused_total += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"{error}\n")
        return None

    @staticmethod
    def _error(cmd_id, code: int, text: str) -> str:
        return json.dumps({"id": cmd_id, "type": "error", "msg": {"code": code, "msg": text}})

    async def _command(self, ws: ServerConnection, cmd: dict) -> None:
        cmd_id, params = cmd.get("id"), cmd.get("params") if isinstance(cmd.get("params"), dict) else {}
        channels = params.get("channels")
        if cmd.get("cmd") == "subscribe" and isinstance(channels, list) and channels and set(channels) <= set(MARKET_CHANNELS):
            await self._subscribe_markets(ws, cmd_id, channels, params)
            return
        if cmd.get("cmd") == "unsubscribe":
            for sid in params.get("sids") or []:
                sub = self.subs.get(sid)
                if sub is not None and sub.ws is ws:
                    del self.subs[sid]
                    await ws.send(json.dumps({"id": cmd_id, "sid": sid, "seq": sub.next_seq(), "type": "unsubscribed"}))
            return
        if cmd.get("cmd") == "update_subscription" and params.get("action") in ("add_markets", "delete_markets", "get_snapshot"):
            await self._update_markets(ws, cmd_id, params)
            return
        ids = params.get("index_ids")
        wanted = set(INDICES) if ids == ["all"] else {i for i in ids or [] if i in INDICES}
        if cmd.get("cmd") == "subscribe":
            if channels != [CHANNEL]:
                await ws.send(self._error(cmd_id, 8, "Unknown channel name"))
                return
            self._next_sid += 1
            self.subs[self._next_sid] = Subscription(self._next_sid, ws, wanted)
            await ws.send(json.dumps({"id": cmd_id, "type": "subscribed", "sid": self._next_sid}))
        elif cmd.get("cmd") == "update_subscription":
            sub = self.subs.get(params.get("sid"))
            action = params.get("action")
            if sub is None or sub.ws is not ws:
                await ws.send(self._error(cmd_id, 14, "Subscription not found"))
            elif action == "indexlist":
                await ws.send(json.dumps({"type": "cfbenchmarks_value_indexlist", "id": cmd_id, "sid": sub.sid, "seq": sub.next_seq(),
                                          "msg": {"index_ids": list(INDICES)}}))
            elif action in ("subscribe_indices", "unsubscribe_indices") and ids:
                sub.indices = sub.indices | wanted if action == "subscribe_indices" else sub.indices - wanted
                await ws.send(json.dumps({"id": cmd_id, "type": "ok", "sid": sub.sid}))
            else:
                await ws.send(self._error(cmd_id, 24, "Index IDs required"))
        else:
            await ws.send(self._error(cmd_id, 5, "Unknown command"))

    def _tickers(self, params: dict) -> list[str] | None:
        raw = params.get("market_tickers")
        if raw is None and params.get("market_ticker"):
            raw = [params["market_ticker"]]
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            return None
        return [t for t in raw if self.x.market(t) is not None]

    async def _subscribe_markets(self, ws: ServerConnection, cmd_id, channels: list[str], params: dict) -> None:
        """One subscription per channel; `orderbook_delta` needs markets and starts with a snapshot of each."""
        tickers = self._tickers(params)
        if "orderbook_delta" in channels and not tickers:
            await ws.send(self._error(cmd_id, 14, "Market ticker required"))
            return
        for channel in channels:
            self._next_sid += 1
            sub = Subscription(self._next_sid, ws, channel=channel, markets=set(tickers or []))
            self.subs[sub.sid] = sub
            await ws.send(json.dumps({"id": cmd_id, "type": "subscribed", "msg": {"channel": channel, "sid": sub.sid}}))
            if channel == "orderbook_delta":
                await self._snapshots(sub, sorted(sub.markets))

    async def _snapshots(self, sub: Subscription, tickers: list[str]) -> None:
        second = int(self.x.clock.now())
        for ticker in tickers:
            m = self.x.market(ticker)
            book = self.x.book(m, second)
            sub.books[ticker] = book
            await self._send(sub, {"type": "orderbook_snapshot", "sid": sub.sid, "seq": sub.next_seq(),
                                   "msg": ch.snapshot_msg(m, book)})

    async def _update_markets(self, ws: ServerConnection, cmd_id, params: dict) -> None:
        """add_markets / delete_markets / get_snapshot on exactly one sid (more is error 12, as on Kalshi)."""
        sids = params.get("sids") if params.get("sids") is not None else ([params["sid"]] if params.get("sid") is not None else [])
        if len(sids) != 1:
            await ws.send(self._error(cmd_id, 12, "Exactly one sid required"))
            return
        sub = self.subs.get(sids[0])
        tickers = self._tickers(params)
        if sub is None or sub.ws is not ws:
            await ws.send(self._error(cmd_id, 7, "Unknown subscription ID"))
            return
        if not tickers:
            await ws.send(self._error(cmd_id, 14, "Market ticker required"))
            return
        action = params["action"]
        if action == "get_snapshot":  # a fresh snapshot of markets already subscribed; nothing else changes
            if sub.channel == "orderbook_delta":
                await self._snapshots(sub, sorted(set(tickers) & sub.markets))
            return
        if action == "add_markets":
            new = sorted(set(tickers) - sub.markets)
            sub.markets |= set(new)
            if sub.channel == "orderbook_delta":
                await self._snapshots(sub, new)
        else:
            sub.markets -= set(tickers)
            for t in tickers:
                sub.books.pop(t, None)
                sub.tops.pop(t, None)
        await ws.send(json.dumps({"id": cmd_id, "sid": sub.sid, "seq": sub.next_seq(), "type": "ok",
                                  "msg": {"market_tickers": sorted(sub.markets)}}))

    async def handler(self, ws: ServerConnection) -> None:
        self.connections_total += 1
        try:
            async for raw in ws:
                try:
                    cmd = json.loads(raw)
                    if not isinstance(cmd, dict):
                        raise ValueError("not an object")
                except ValueError:
                    await ws.send(self._error(None, 1, "Unable to process message"))
                    continue
                await self._command(ws, cmd)
        except ConnectionClosed:
            pass
        finally:
            for sid in [s.sid for s in self.subs.values() if s.ws is ws]:
                self.subs.pop(sid, None)

    def serve(self, host: str, port: int):
        # Kalshi pings every 10 s; the client's library answers.
        return serve(self.handler, host, port, process_request=self.process_request, ping_interval=10)
