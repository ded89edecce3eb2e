"""The market channels of the simulator's Kalshi WebSocket, in Kalshi's message shapes (docs `exchanges.md`):
`orderbook_delta` (an `orderbook_snapshot` per market, then one `orderbook_delta` per changed price level),
`ticker` (top of book when it changes) and `market_lifecycle_v2` (every market's status changes).

Prices are fixed-point dollar strings ("0.4500"), counts `_fp` strings ("300.00"). A book holds bids only, per side:
`yes_dollars_fp` and `no_dollars_fp`, each ascending, best bid last, as REST's `orderbook_fp`. These are pure
functions of the exchange's state; `kalshi_ws.py` numbers them (`seq`) and sends them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from kalshi_shadow.sim.exchange import Exchange, Market

Book = tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]  # (YES bids, NO bids), best first
SIDES = ("yes", "no")


def _price(p: Decimal) -> str:
    return f"{p:.4f}"


def _count(c: Decimal) -> str:
    return f"{c:.2f}"


def ts_iso(second: int) -> str:
    return datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot_msg(m: Market, book: Book) -> dict:
    msg: dict = {"market_ticker": m.ticker, "market_id": market_id(m)}
    for side, levels in zip(SIDES, book):
        if levels:
            msg[f"{side}_dollars_fp"] = [[_price(p), _count(c)] for p, c in reversed(levels)]
    return msg


def deltas(m: Market, old: Book, new: Book, second: int) -> list[dict]:
    """One delta per price level whose resting count changed, as the exchange sends them (a level that empties is
    a negative delta of its whole count)."""
    out = []
    for side, before, after in zip(SIDES, old, new):
        a, b = dict(before), dict(after)
        for price in sorted(set(a) | set(b)):
            change = b.get(price, Decimal(0)) - a.get(price, Decimal(0))
            if change:
                out.append({"market_ticker": m.ticker, "market_id": market_id(m), "price_dollars": _price(price),
                            "delta_fp": _count(change), "side": side, "ts": ts_iso(second), "ts_ms": second * 1000})
    return out


def ticker_msg(x: Exchange, m: Market, book: Book, second: int) -> dict:
    yes_bids, no_bids = book
    body = x.market_json(m, second)
    msg = {"market_ticker": m.ticker, "market_id": market_id(m), "price_dollars": body["last_price_dollars"],
           "yes_bid_dollars": _price(yes_bids[0][0]) if yes_bids else "0.0000",
           "yes_ask_dollars": _price(1 - no_bids[0][0]) if no_bids else "1.0000",
           "yes_bid_size_fp": _count(yes_bids[0][1]) if yes_bids else "0.00",
           "yes_ask_size_fp": _count(no_bids[0][1]) if no_bids else "0.00",
           "volume_fp": body["volume_fp"], "open_interest_fp": body["open_interest_fp"], "ts": second,
           "ts_ms": second * 1000}
    return msg


def market_id(m: Market) -> str:
    """A stable id per market (Kalshi sends a UUID beside the ticker)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, m.ticker))


def lifecycle_msg(x: Exchange, m: Market, status: str | None, second: int) -> dict | None:
    """The `market_lifecycle_v2` message for a market entering `status` (None: just listed), or None if Kalshi
    sends none for it: opening and closing on schedule send nothing; `deactivated`/`activated` are pauses."""
    if status is None:
        return {"event_type": "created", "market_ticker": m.ticker, "open_ts": m.open_ts, "close_ts": m.close_ts,
                "additional_metadata": {"event_ticker": m.event_ticker, "strike_type": m.strike_type,
                                        "floor_strike": m.floor, "cap_strike": m.cap}}
    kind = {"determined": "determined", "finalized": "settled"}.get(status)
    if kind is None:
        return None
    body = x.market_json(m, second)
    msg: dict = {"event_type": kind, "market_ticker": m.ticker}
    if kind == "determined":
        msg.update(result=body["result"], determination_ts=second)
        if body.get("settlement_value_dollars") is not None:
            msg["settlement_value"] = body["settlement_value_dollars"]
    else:
        msg["settled_ts"] = second
    return msg
