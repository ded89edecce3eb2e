"""Kalshi Trade API v2 market-data REST, as served by the simulator (starlette).

Shapes follow the fixed-point era: prices as "0.4500" strings, counts as "300.00". No order or portfolio
endpoints exist here, as nowhere in this project.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kalshi_shadow.kalshi.ratelimit import TokenBucket
from kalshi_shadow.sim.clock import iso
from kalshi_shadow.sim.exchange import Exchange, Market
from kalshi_shadow.sim.faults import Faults

PREFIX = "/trade-api/v2"
STATUS_FILTER = {
    "unopened": {"initialized"},
    "open": {"active"},
    "paused": {"inactive"},
    "closed": {"closed"},
    "settled": {"determined", "finalized", "amended", "disputed"},
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError, binascii.Error):
        raise ValueError("invalid cursor") from None


def _page(items: list, request: Request, max_limit: int, default_limit: int = 100) -> tuple[list, str]:
    try:
        limit = int(request.query_params.get("limit", default_limit))
    except ValueError:
        raise ValueError("limit must be an integer") from None
    if not 1 <= limit <= max_limit:
        raise ValueError(f"limit must be between 1 and {max_limit}")
    offset = _decode_cursor(request.query_params.get("cursor"))
    chunk = items[offset : offset + limit]
    more = offset + limit < len(items)
    return chunk, _encode_cursor(offset + limit) if more else ""


def _ts_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a unix timestamp in seconds") from None


SIGNED_HEADERS = ("kalshi-access-key", "kalshi-access-signature", "kalshi-access-timestamp")


def signature_error(public_key, api_key_id: str | None, headers, method: str, path: str) -> str | None:
    """Why a signed request (REST, or the WebSocket handshake) is refused, None if its signature is good: the key id
    must be the sim's, the timestamp within a minute, and the RSA-PSS signature valid over `ts + METHOD + path`."""
    key, sig, ts = (headers.get(h) for h in SIGNED_HEADERS)
    if not (key and sig and ts) or public_key is None or key != api_key_id:
        return "invalid or unknown API key"
    try:
        if abs(int(ts) / 1000.0 - time.time()) > 60:
            return "timestamp outside the allowed window"
        public_key.verify(base64.b64decode(sig), (ts + method + path).encode(),
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    except (InvalidSignature, ValueError, binascii.Error):
        return "signature verification failed"
    return None


class KalshiAPI:
    def __init__(self, exchange: Exchange, faults: Faults, *, rate_limit_per_second: float = 20.0, api_key_id: str | None = None, public_key_pem: bytes | None = None) -> None:
        self.x = exchange
        self.faults = faults
        self.bucket = TokenBucket(rate_limit_per_second, 2 * rate_limit_per_second)
        self.api_key_id = api_key_id
        self.fee_changes: list[dict[str, Any]] = []  # scheduled by /_sim/fee_changes; applied from their time on
        self.public_key = serialization.load_pem_public_key(public_key_pem) if public_key_pem else None
        self.requests = 0

    # ---- middleware-ish checks --------------------------------------------------------------------------
    def _auth_error(self, request: Request) -> JSONResponse | None:
        h = request.headers
        if not any(k in h for k in SIGNED_HEADERS):
            return None
        error = signature_error(self.public_key, self.api_key_id, h, request.method, request.url.path)
        return _error(401, "authentication_error", error) if error else None

    async def dispatch(self, request: Request, handler) -> JSONResponse:
        self.requests += 1
        if not self.bucket.try_acquire() or self.faults.take("http_429"):
            return JSONResponse({"error": "too many requests"}, status_code=429)
        if self.faults.take("http_5xx"):
            code = (500, 502, 503)[self.requests % 3]
            return _error(code, "internal_error", "simulated server error")
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        try:
            response = handler(request, self.x.clock.now())
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        if self.faults.take("slow_pages"):  # the book was read now; the answer arrives late
            await asyncio.sleep(self.faults.slow_page_seconds)
        return response

    # ---- endpoints --------------------------------------------------------------------------------------
    def get_series(self, request: Request, now: float) -> JSONResponse:
        t = request.path_params["series_ticker"]
        if t not in self.x.specs:
            return _error(404, "not_found", f"series {t} not found")
        body = self.x.series_json(t)
        for c in sorted(self.fee_changes, key=lambda c: c["at"]):  # changes whose time has come are in force
            if c["SeriesTicker"] == t and c["at"] <= now:
                body.update(fee_type=c["FeeType"], fee_multiplier=c["FeeMultiplier"])
        return JSONResponse({"series": body})

    def get_fee_changes(self, request: Request, now: float) -> JSONResponse:
        """Upcoming changes, as the API reference shows them (PascalCase keys)."""
        series = request.query_params.get("series_ticker")
        return JSONResponse({"series_fee_change_arr": [
            {k: v for k, v in c.items() if k != "at"} for c in self.fee_changes
            if c["at"] > now and (not series or c["SeriesTicker"] == series)]})

    def _filtered_markets(self, request: Request, now: float) -> list[Market]:
        q = request.query_params
        markets = self.x.markets()
        if q.get("series_ticker"):
            markets = [m for m in markets if m.series == q["series_ticker"]]
        if q.get("event_ticker"):
            wanted = set(q["event_ticker"].split(","))
            markets = [m for m in markets if m.event_ticker in wanted]
        if q.get("tickers"):
            wanted = set(q["tickers"].split(","))
            markets = [m for m in markets if m.ticker in wanted]
        if q.get("status"):
            allowed = set().union(*(STATUS_FILTER.get(s, {"__none__"}) for s in q["status"].split(",")))
            markets = [m for m in markets if self.x.status(m, now) in allowed]
        lo, hi = _ts_param(request, "min_close_ts"), _ts_param(request, "max_close_ts")
        if lo is not None:
            markets = [m for m in markets if m.close_ts >= lo]
        if hi is not None:
            markets = [m for m in markets if m.close_ts <= hi]
        lo, hi = _ts_param(request, "min_settled_ts"), _ts_param(request, "max_settled_ts")
        if lo is not None or hi is not None:
            settled = STATUS_FILTER["settled"]
            markets = [
                m for m in markets
                if self.x.status(m, now) in settled
                and (lo is None or m.close_ts + m.settlement_timer >= lo)
                and (hi is None or m.close_ts + m.settlement_timer <= hi)
            ]
        return markets

    def get_markets(self, request: Request, now: float) -> JSONResponse:
        chunk, cursor = _page(self._filtered_markets(request, now), request, 1000)
        return JSONResponse({"markets": [self.x.market_json(m, now) for m in chunk], "cursor": cursor})

    def get_market(self, request: Request, now: float) -> JSONResponse:
        m = self.x.market(request.path_params["ticker"])
        if m is None:
            return _error(404, "not_found", f"market {request.path_params['ticker']} not found")
        return JSONResponse({"market": self.x.market_json(m, now)})

    def get_orderbook(self, request: Request, now: float) -> JSONResponse:
        m = self.x.market(request.path_params["ticker"])
        if m is None:
            return _error(404, "not_found", f"market {request.path_params['ticker']} not found")
        depth = request.query_params.get("depth")
        return JSONResponse(self.x.orderbook_json(m, now, int(depth) if depth else None))

    def _event_json(self, ev, now: float, nested: bool) -> dict[str, Any]:
        body = {"event_ticker": ev.event_ticker, "series_ticker": ev.series, "title": f"{ev.series} {ev.event_ticker}",
                "sub_title": "", "mutually_exclusive": ev.series == "KXBTC", "category": "Crypto",
                "strike_date": iso(ev.close_ts)}
        if nested:
            body["markets"] = [self.x.market_json(m, now) for m in ev.markets]
        return body

    def get_events(self, request: Request, now: float) -> JSONResponse:
        q = request.query_params
        events = self.x.events()
        if q.get("series_ticker"):
            events = [e for e in events if e.series == q["series_ticker"]]
        if q.get("status"):
            allowed = set().union(*(STATUS_FILTER.get(s, {"__none__"}) for s in q["status"].split(",")))
            events = [e for e in events if any(self.x.status(m, now) in allowed for m in e.markets)]
        chunk, cursor = _page(events, request, 200)
        nested = q.get("with_nested_markets", "false").lower() == "true"
        return JSONResponse({"events": [self._event_json(e, now, nested) for e in chunk], "cursor": cursor})

    def get_event(self, request: Request, now: float) -> JSONResponse:
        ev = self.x.event(request.path_params["event_ticker"])
        if ev is None:
            return _error(404, "not_found", "event not found")
        return JSONResponse({"event": self._event_json(ev, now, False), "markets": [self.x.market_json(m, now) for m in ev.markets]})

    def get_trades(self, request: Request, now: float) -> JSONResponse:
        return JSONResponse({"trades": [], "cursor": ""})

    def get_exchange_status(self, request: Request, now: float) -> JSONResponse:
        return JSONResponse(self.x.exchange_status_json(now))

    # ---- simulator controls (not Kalshi) ----------------------------------------------------------------
    async def post_faults(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.faults.set(**{k: body[k] for k in ("http_5xx", "http_429", "drop_ws", "drop_kalshi_ws", "drop_delta", "malformed_ws",
                                                "ws_silence_seconds", "slow_pages", "slow_page_seconds", "venue_silence",
                                                "venue_offset")
                    if k in body})
        if body.get("pause_seconds"):  # trading paused for this long (sim time)
            self.x.pause(float(body["pause_seconds"]))
        return JSONResponse({"ok": True})

    async def get_book_history(self, request: Request) -> JSONResponse:
        """The simulator's own book of a market at every second in [from, to] (sim time, at most an hour): the
        truth a test compares the recorded quotes with."""
        m = self.x.market(request.path_params["ticker"])
        if m is None:
            return _error(404, "not_found", "market not found")
        try:
            lo, hi = int(request.query_params["from"]), int(request.query_params["to"])
        except (KeyError, ValueError):
            return _error(400, "bad_request", "from and to are unix seconds")
        if not 0 <= hi - lo <= 3600:
            return _error(400, "bad_request", "at most an hour at a time")
        out = []
        for second in range(lo, hi + 1):
            yes, no = self.x.book(m, second)
            out.append({"second": second, "yes": [[str(p), str(c)] for p, c in yes], "no": [[str(p), str(c)] for p, c in no]})
        return JSONResponse({"ticker": m.ticker, "books": out})

    async def post_fee_change(self, request: Request) -> JSONResponse:
        """Schedule a fee change: {series_ticker, fee_type, fee_multiplier, scheduled_ts (unix seconds)}."""
        body = await request.json()
        try:
            at = float(body["scheduled_ts"])
            self.fee_changes.append({"ID": f"fc-{len(self.fee_changes) + 1}", "SeriesTicker": str(body["series_ticker"]),
                                     "FeeType": str(body["fee_type"]), "FeeMultiplier": float(body["fee_multiplier"]),
                                     "ScheduledTs": iso(at), "at": at})
        except (KeyError, TypeError, ValueError) as exc:
            return _error(400, "bad_request", f"fee change needs series_ticker, fee_type, fee_multiplier, scheduled_ts: {exc}")
        return JSONResponse({"ok": True})

    async def post_outcome(self, request: Request) -> JSONResponse:
        body = await request.json()
        try:
            self.x.set_outcome(request.path_params["ticker"], body["result"], body.get("settlement_value"), body.get("status", "determined"))
        except (KeyError, ValueError) as exc:
            return _error(400, "bad_request", str(exc))
        return JSONResponse({"ok": True})

    async def get_state(self, request: Request) -> JSONResponse:
        now = self.x.clock.now()
        return JSONResponse({"now": now, "index": self.x.index.at(now), "markets": len(self.x.markets()), "requests": self.requests})

    def app(self) -> Starlette:
        def wrap(handler):
            async def endpoint(request: Request) -> JSONResponse:
                return await self.dispatch(request, handler)
            return endpoint

        async def not_found(request: Request, exc: Exception) -> JSONResponse:
            return _error(404, "not_found", f"no route {request.url.path}")

        routes = [
            Route(PREFIX + "/series/fee_changes", wrap(self.get_fee_changes)),
            Route(PREFIX + "/series/{series_ticker}", wrap(self.get_series)),
            Route(PREFIX + "/events", wrap(self.get_events)),
            Route(PREFIX + "/events/{event_ticker}", wrap(self.get_event)),
            Route(PREFIX + "/markets", wrap(self.get_markets)),
            Route(PREFIX + "/markets/trades", wrap(self.get_trades)),
            Route(PREFIX + "/markets/{ticker}", wrap(self.get_market)),
            Route(PREFIX + "/markets/{ticker}/orderbook", wrap(self.get_orderbook)),
            Route(PREFIX + "/exchange/status", wrap(self.get_exchange_status)),
            Route("/_sim/faults", self.post_faults, methods=["POST"]),
            Route("/_sim/fee_changes", self.post_fee_change, methods=["POST"]),
            Route("/_sim/markets/{ticker}/outcome", self.post_outcome, methods=["POST"]),
            Route("/_sim/state", self.get_state),
            Route("/_sim/markets/{ticker}/books", self.get_book_history),
        ]
        return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
