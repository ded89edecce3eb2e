"""Kalshi WebSocket `cfbenchmarks_value` -> raw `cfb_index_values` (formats: docs `exchanges.md`, CF Benchmarks).

The contracts settle on CF Benchmarks' BRTI, and Kalshi relays it about once a second on its authenticated
WebSocket. So with Kalshi credentials this collector records it: the index of record, which pricing prefers to the
venues' proxy while it is fresh (`pricing/index.py`). The handshake is signed like a REST request (`GET
/trade-api/ws/v2`, signed anew for every connection); Kalshi pings every 10 s and the client answers.

Each message carries the raw CF frame as a JSON *string* (`data`: its `time` and `value`), Kalshi's receive time,
the trailing 60-s average and, in the last minute before :00/:15/:30/:45, the running average the 15-minute
contracts settle on. Values are exact decimals. The subscription's `seq`, when sent, should rise by one: a jump is a
`gap` event (counted, across a reconnect too only within a session, since a new subscription starts again); a value
whose time is at or before the newest is counted out of order and kept (the warehouse dedups by index and time).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from websockets.asyncio.client import ClientConnection

from collectors.feed import Malformed, decimal_field, feed_main, int_field, text_field
from collectors.kalshi_socket import KalshiSocket, keyed_signer
from kalshi_shadow.config import Settings
from kalshi_shadow.kalshi.auth import KalshiSigner

log = logging.getLogger("collectors.cfbenchmarks")
CHANNEL = "cfbenchmarks_value"
INDEX_ID = "BRTI"


def _ms(value: Any, key: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Malformed(f"{key!r}={value!r} is not a time in ms")
    return datetime.fromtimestamp(value // 1000, tz=timezone.utc).replace(microsecond=(value % 1000) * 1000)


def _average(msg: dict[str, Any], key: str) -> tuple[Any, int | None]:
    """(value, ticks) of an average block (`avg_60s_data`, `last_60s_windowed_average_15min`), (None, None) if absent."""
    block = msg.get(key)
    if block is None:
        return None, None
    if not isinstance(block, dict):
        raise Malformed(f"{key!r} is not an object")
    return decimal_field(block, "value", required=True), int_field(block, "window_size")


def parse_value(msg: Any, received: datetime, seq: int | None) -> dict[str, Any]:
    """A `cfbenchmarks_value` message's `msg` as a `cfb_index_values` row; raises Malformed if broken."""
    if not isinstance(msg, dict):
        raise Malformed("'msg' is not an object")
    index_id = text_field(msg, "index_id")
    frame = msg.get("data")
    try:
        frame = json.loads(frame) if isinstance(frame, str) else frame
    except ValueError:
        raise Malformed("'data' is not a JSON frame") from None
    if not isinstance(frame, dict):
        raise Malformed("'data' is not a JSON object")
    value = decimal_field(frame, "value", required=True)
    if value <= 0:
        raise Malformed(f"'value'={value} is not positive")
    avg, avg_ticks = _average(msg, "avg_60s_data")
    final, final_ticks = _average(msg, "last_60s_windowed_average_15min")
    return {"ts": _ms(frame.get("time"), "time"), "received_ts": received,
            "kalshi_received_ts": _ms(msg.get("received_at"), "received_at") if msg.get("received_at") is not None else None,
            "index_id": index_id, "value": value, "avg_60s": avg, "avg_60s_ticks": avg_ticks,
            "final_minute_avg": final, "final_minute_ticks": final_ticks, "seq": seq}


class IndexCollector(KalshiSocket):
    name = "index"
    table = "cfb_index_values"

    def __init__(self, url: str, data_dir, signer: KalshiSigner, **kw) -> None:
        super().__init__(url, data_dir, signer, **kw)
        self.health.extra.update({"channel": CHANNEL, "index_id": INDEX_ID})
        self.seq: int | None = None
        self._cmd = 0

    async def subscribe(self, ws: ClientConnection) -> None:
        self._cmd += 1
        self.seq = None  # a new subscription numbers its messages afresh
        await ws.send(json.dumps({"id": self._cmd, "cmd": "subscribe",
                                  "params": {"channels": [CHANNEL], "index_ids": [INDEX_ID]}}))

    def _sequence(self, seq: int | None) -> None:
        if seq is None:
            return
        if self.seq is not None and seq > self.seq + 1:
            n = seq - self.seq - 1
            self.health.gaps += 1
            self.health.missed_messages += n
            self.health.event("gap", f"{CHANNEL} missed {n} message{'s' if n > 1 else ''}: seq {self.seq + 1}..{seq - 1}")
            log.warning("index: seq gap: missed %d messages", n)
        self.seq = seq if self.seq is None else max(self.seq, seq)

    def on_message(self, msg: dict[str, Any], received: datetime) -> None:
        kind = msg.get("type")
        if kind == CHANNEL:
            self.health.message()
            seq = int_field(msg, "seq")
            row = parse_value(msg.get("msg"), received, seq)
            self._sequence(seq)
            self.note_order(row["ts"], f"{row['index_id']} value at {row['ts'].isoformat()}")
            self.writer.append(row)
        elif kind == "subscribed":
            log.info("index: subscribed to %s (sid %s)", CHANNEL, msg.get("sid", (msg.get("msg") or {}).get("sid")))
        elif kind == "error":
            detail = msg.get("msg")
            self.health.event("exchange_error", str(detail)[:200])
            log.error("index: error from Kalshi: %s", detail)
        # Other types (an index list, unknown messages) are ignored.


def _make(args, settings: Settings) -> IndexCollector:
    return IndexCollector(args.url, args.data_dir, keyed_signer(settings, "collect-index"), flush_seconds=args.flush_seconds, silence_seconds=args.silence_seconds)


def main(argv: list[str]) -> int:
    return feed_main(argv, "kalshi-shadow collect-index", __doc__, lambda s: s.kalshi_ws_url, _make)


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
