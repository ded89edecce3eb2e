"""Kalshi's Trade API WebSocket (`/trade-api/ws/v2`), as far as the platform reads it (formats: docs `exchanges.md`).

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


@dataclass
class Subscription:
    sid: int
    ws: ServerConnection
    indices: set[str] = field(default_factory=set)
    seq: int = 0


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
            last = max(last, second)

    async def _publish(self, second: int) -> None:
        msg = None
        for sub in list(self.subs.values()):
            if "BRTI" not in sub.indices:
                continue
            msg = msg or self.value_message(second)
            sub.seq += 1
            try:
                await sub.ws.send(json.dumps({"type": CHANNEL, "sid": sub.sid, "seq": sub.seq, "msg": msg}))
            except ConnectionClosed:
                self.subs.pop(sub.sid, None)

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
        ids = params.get("index_ids")
        wanted = set(INDICES) if ids == ["all"] else {i for i in ids or [] if i in INDICES}
        if cmd.get("cmd") == "subscribe":
            if params.get("channels") != [CHANNEL]:
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
                sub.seq += 1
                await ws.send(json.dumps({"type": "cfbenchmarks_value_indexlist", "id": cmd_id, "sid": sub.sid, "seq": sub.seq,
                                          "msg": {"index_ids": list(INDICES)}}))
            elif action in ("subscribe_indices", "unsubscribe_indices") and ids:
                sub.indices = sub.indices | wanted if action == "subscribe_indices" else sub.indices - wanted
                await ws.send(json.dumps({"id": cmd_id, "type": "ok", "sid": sub.sid}))
            else:
                await ws.send(self._error(cmd_id, 24, "Index IDs required"))
        else:
            await ws.send(self._error(cmd_id, 5, "Unknown command"))

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
