"""The simulated Kalshi exchange: BTC series, their events and markets, quotes, lifecycle and settlement.

Everything is a function of the clock: an event exists once its window is near, a market's status follows its
times, and settlement uses the mean of the index's 60 one-second values in (close - 60 s, close], rounded to the
cent, compared with the market's strike. Tests may override an outcome (`set_outcome`) to model disputes/amendments.

Quotes come from a market maker better informed than the platform's model (the true vol, the index MAKER_LEAD s
before the feed publishes it), as recorded Kalshi mids usually forecast better than the model; its spreads widen near
close and in fast markets, and its books go one-sided or empty away from the money.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from kalshi_shadow.sim.clock import Clock, iso
from kalshi_shadow.sim.index import SECONDS_PER_YEAR, IndexPath
from kalshi_shadow.sim.venues import Venues

ET = ZoneInfo("America/New_York")
CENT = Decimal("0.01")
FOUR = Decimal("0.0001")
WINDOW = 60  # settlement averages this many one-second index values
MAKER_LEAD = 2.0  # seconds of index the market maker sees before the spot feed publishes it
FAST_LOOKBACK = 30  # seconds over which an index move counts as recent
FAST_MOVE = 0.001  # a 10 bp move in FAST_LOOKBACK s doubles the spread
BOOK_DEPTH = 5  # price levels per side of a book
PAUSE_WEEKDAY, PAUSE_HOURS = 3, (3, 5)  # the scheduled pause: Thursday 03:00-05:00 ET


@dataclass(frozen=True)
class SeriesSpec:
    ticker: str
    title: str
    cadence: int  # seconds between closes
    settlement_timer: int
    kind: str  # updown | above | range
    minute_in_ticker: bool


def series_specs(fast: bool) -> dict[str, SeriesSpec]:
    hourly = 300 if fast else 3600
    return {
        "KXBTC15M": SeriesSpec("KXBTC15M", "Bitcoin price up or down in 15 minutes", 120 if fast else 900, 1, "updown", True),
        "KXBTCD": SeriesSpec("KXBTCD", "Bitcoin price above/below (hourly)", hourly, 60, "above", fast),
        "KXBTC": SeriesSpec("KXBTC", "Bitcoin price range (hourly)", hourly, 60, "range", fast),
    }


@dataclass
class Market:
    ticker: str
    event_ticker: str
    series: str
    strike_type: str
    floor: float | None
    cap: float | None
    open_ts: int
    close_ts: int
    settlement_timer: int
    yes_sub_title: str
    strike_known_ts: int  # before this, floor_strike is not published (KXBTC15M)
    override: dict | None = None


@dataclass
class Event:
    event_ticker: str
    series: str
    open_ts: int
    close_ts: int
    markets: list[Market] = field(default_factory=list)


def _event_code(close_ts: int, minute: bool) -> str:
    et = datetime.fromtimestamp(close_ts, tz=timezone.utc).astimezone(ET)
    code = f"{et:%y}{et.strftime('%b').upper()}{et:%d%H}"
    return code + (f"{et:%M}" if minute else "")


def _fmt_price(x: Decimal) -> str:
    return str(x.quantize(FOUR))


def _noise(*parts: object) -> float:
    """A deterministic uniform(0,1) from its inputs: quotes are stable within a time bucket and reproducible."""
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


class Exchange:
    FINALIZE_AFTER = 300  # seconds after determination

    def __init__(self, clock: Clock, *, seed: int = 7, fast: bool = False, series: tuple[str, ...] = ("KXBTC15M", "KXBTCD", "KXBTC"), history_seconds: int = 6 * 3600) -> None:
        self.clock = clock
        self.seed = seed
        self.fast = fast
        self.specs = {k: v for k, v in series_specs(fast).items() if k in series}
        self.history_seconds = history_seconds
        start = int(clock.now())
        self.index = IndexPath(seed, origin=start - history_seconds - 7200)
        self._window_means: dict[int, Decimal] = {}  # close -> settlement average (asked for on every page)
        self.venues = Venues(self.index, seed)  # each spot venue trades at the index times a persistent basis
        self._events: dict[str, Event] = {}
        self._markets: dict[str, Market] = {}
        self._made_until: dict[str, int] = {}  # series -> the last close its events were made up to
        self._lock = threading.RLock()
        self.finalize_after = 60 if fast else self.FINALIZE_AFTER
        self.pause_until = float("-inf")  # sim time a test's pause ends

    # ---- event generation -------------------------------------------------------------------------------
    def _ensure_events(self, now: float) -> None:
        """Create every event of the history window up to the one open now. Called on every lookup, so it only
        walks the closes beyond the last one it made (events are never removed)."""
        with self._lock:
            for spec in self.specs.values():
                last_close = (math.floor(now / spec.cadence) + 1) * spec.cadence  # the event open now
                made = self._made_until.get(spec.ticker)
                if made is not None and made >= last_close:
                    continue
                first_close = (math.floor((now - self.history_seconds) / spec.cadence) + 1) * spec.cadence
                if made is not None:
                    first_close = max(first_close, made + spec.cadence)
                self._made_until[spec.ticker] = int(last_close)
                for close in range(int(first_close), int(last_close) + 1, spec.cadence):
                    code = f"{spec.ticker}-{_event_code(close, spec.minute_in_ticker)}"
                    if code not in self._events:
                        self._make_event(spec, code, close)

    def _make_event(self, spec: SeriesSpec, event_ticker: str, close: int) -> None:
        open_ts = close - spec.cadence
        ev = Event(event_ticker, spec.ticker, open_ts, close)
        ref = self.index.value(open_ts)
        if spec.kind == "updown":
            # Strike = the previous window's 60-s average, published a little after open.
            floor = float(self.window_mean(open_ts))
            minute = datetime.fromtimestamp(close, tz=timezone.utc).astimezone(ET).minute
            delay = 10 if self.fast else 30
            ev.markets.append(Market(f"{event_ticker}-{minute:02d}", event_ticker, spec.ticker, "greater_or_equal", floor, None, open_ts, close, spec.settlement_timer, "Target price", open_ts + delay))
        elif spec.kind == "above":
            centre = round(ref / 250.0) * 250
            for k in range(-12, 13):
                f = centre + 250 * k - 0.01
                ev.markets.append(Market(f"{event_ticker}-T{f:.2f}", event_ticker, spec.ticker, "greater", f, None, open_ts, close, spec.settlement_timer, f"${f + 0.01:,.0f} or above", open_ts))
        else:
            width = 500
            centre = round(ref / width) * width
            lo, hi = centre - 10 * width, centre + 10 * width
            ev.markets.append(Market(f"{event_ticker}-T{lo - 0.01:.2f}", event_ticker, spec.ticker, "less", None, float(lo), open_ts, close, spec.settlement_timer, f"${lo - 0.01:,.2f} or below", open_ts))
            for b in range(lo, hi, width):
                cap = b + width - 0.01
                ev.markets.append(Market(f"{event_ticker}-B{b + width // 2}", event_ticker, spec.ticker, "between", float(b), cap, open_ts, close, spec.settlement_timer, f"${b:,} to {cap:,.2f}", open_ts))
            ev.markets.append(Market(f"{event_ticker}-T{hi - 0.01:.2f}", event_ticker, spec.ticker, "greater", hi - 0.01, None, open_ts, close, spec.settlement_timer, f"${hi:,} or above", open_ts))
        self._events[event_ticker] = ev
        for m in ev.markets:
            self._markets[m.ticker] = m

    # ---- state ------------------------------------------------------------------------------------------
    def events(self) -> list[Event]:
        self._ensure_events(self.clock.now())
        return sorted(self._events.values(), key=lambda e: (e.close_ts, e.event_ticker))

    def markets(self) -> list[Market]:
        return [m for e in self.events() for m in e.markets]

    def market(self, ticker: str) -> Market | None:
        self._ensure_events(self.clock.now())
        return self._markets.get(ticker)

    def event(self, event_ticker: str) -> Event | None:
        self._ensure_events(self.clock.now())
        return self._events.get(event_ticker)

    def status(self, m: Market, now: float) -> str:
        if self._overridden(m, now) and m.override.get("status"):
            return m.override["status"]
        if now < m.open_ts:
            return "initialized"
        if now < m.close_ts:
            return "active"
        if now < m.close_ts + m.settlement_timer:
            return "closed"
        if now < m.close_ts + m.settlement_timer + self.finalize_after:
            return "determined"
        return "finalized"

    def published(self, second: int) -> Decimal:
        """The index as published for a whole second: in cents, as CF Benchmarks' frames carry it (the index feed
        sends this, and settlement averages it)."""
        return Decimal(f"{self.index.value(second):.2f}")

    def window_mean(self, close: int) -> Decimal:
        """The settlement average: the mean of the 60 published values in (close - 60 s, close], to the cent."""
        if close not in self._window_means:
            cents = sum(Decimal(f"{v:.2f}") for v in self.index.values(close - WINDOW + 1, close))
            self._window_means[close] = (cents / WINDOW).quantize(CENT, ROUND_HALF_UP)
        return self._window_means[close]

    def expiration_value(self, m: Market) -> Decimal:
        return self.window_mean(m.close_ts)

    def natural_result(self, m: Market) -> str:
        x = float(self.expiration_value(m))
        f, c = m.floor, m.cap
        won = {
            "greater": lambda: x > f,
            "greater_or_equal": lambda: x >= f,
            "less": lambda: x < c,
            "less_or_equal": lambda: x <= c,
            "between": lambda: f <= x <= c,
        }[m.strike_type]()
        return "yes" if won else "no"

    def set_outcome(self, ticker: str, result: str, settlement_value: str | None = None, status: str = "determined") -> None:
        if result not in ("yes", "no", "scalar", "void"):
            raise ValueError(f"result must be yes/no/scalar/void, not {result!r}")
        m = self.market(ticker)
        if m is None:
            raise KeyError(ticker)
        if result == "scalar" and settlement_value is None:
            raise ValueError("a scalar result needs settlement_value")
        m.override = {"result": result, "settlement_value": settlement_value, "status": status, "since": self.clock.now()}

    @staticmethod
    def _overridden(m: Market, now: float) -> bool:
        """An override holds from when it was set: the books and pages of earlier seconds stay what they were."""
        return m.override is not None and now >= m.override["since"]

    def maker_view(self, now: float) -> tuple[int, float, float]:
        """(last second seen, index there, true vol there): the maker sees the index MAKER_LEAD s before the spot
        feed publishes it and knows the vol the path is drawn with, so it is better informed than a model of the feed
        (an EWMA of ticks), as the real Kalshi book usually is."""
        seen = math.floor(now + MAKER_LEAD)
        return seen, self.index.value(seen), self.index.vol_at(seen)

    def fair_prob(self, m: Market, now: float) -> float | None:
        """The market maker's own view: a lognormal law of the settlement's 60-s average, with the part of the window
        it has already seen realised; None before a 15M strike is known."""
        if now < m.strike_known_ts:
            return None
        seen, _, vol = self.maker_view(now)
        seen = min(seen, m.close_ts)
        s = self.index.value(seen)
        first = m.close_ts - WINDOW + 1
        realised = float(self.index.values(first, seen).sum()) if seen >= first else 0.0
        rest = m.close_ts - max(seen, first - 1)  # window seconds still to come
        gap = m.close_ts - seen - rest  # seconds before the window opens
        # Variance of the log of the mean of the next `rest` seconds, `gap` s out (discrete Brownian average).
        var = vol * vol * (gap + (rest + 1) * (2 * rest + 1) / (6 * rest)) / SECONDS_PER_YEAR if rest else 0.0

        def above(a: float) -> float:
            """P(window mean >= a)."""
            if rest == 0:
                return float(realised / WINDOW >= a)
            k = (WINDOW * a - realised) / rest  # what the rest of the window must average
            return 1.0 if k <= 0 else 1.0 - _norm_cdf((math.log(k / s) + 0.5 * var) / math.sqrt(var))

        # Settlement rounds the mean to the cent, hence half-cent thresholds (the comparisons of natural_result).
        st = m.strike_type
        lower = {"greater": 0.005, "greater_or_equal": -0.005, "between": -0.005}
        upper = {"less": -0.005, "less_or_equal": 0.005, "between": 0.005}
        p = above(m.floor + lower[st]) if st in lower else 1.0
        return p - (above(m.cap + upper[st]) if st in upper else 0.0)

    def half_spread(self, m: Market, now: float, u: float) -> float:
        """Half the quoted spread: wider near close (a few ticks decide the average, so quotes are risky) and in fast
        markets (a large recent index move means quotes go stale fast)."""
        near_close = 1.0 + 2.0 * math.exp(-max(m.close_ts - now, 0.0) / 180.0)
        seen, s, _ = self.maker_view(now)
        move = abs(math.log(s / self.index.value(max(seen - FAST_LOOKBACK, self.index.origin))))
        fast = min(1.0 + move / FAST_MOVE, 4.0)
        return min((0.003 + 0.007 * u) * near_close * fast, 0.15)

    @staticmethod
    def _sides_shown(fair: float, u_edge: float, u_other: float) -> tuple[bool, bool]:
        """(bid shown, ask shown). Away from the money the maker mostly leaves empty the side next to 0 or 1 (nobody
        pays 1c for a 0.2c YES: deep OTM books have no bid, deep ITM no ask) and deep in the wings often quotes
        nothing at all, as on Kalshi. Near the money both sides show but for a rare pulled quote."""
        wing = min(fair, 1.0 - fair)
        edge = u_edge > 0.02 + 0.8 * max(0.0, 1.0 - wing / 0.15)
        other = u_other > (0.5 if wing < 0.03 else 0.02)
        return (edge, other) if fair < 0.5 else (other, edge)

    def quote(self, m: Market, now: float) -> dict:
        """Top of book on the cent grid, its noise stable within a 2-s bucket. Prices Decimal; None = empty side.
        The maker requotes on whole seconds only, so the book at `now` is the book of its second: what the REST
        pages and the WebSocket's deltas both show."""
        now = math.floor(now)
        bucket = int(now // 2)
        fair = self.fair_prob(m, now)
        if fair is None or self.status(m, now) != "active":
            return {"yes_bid": None, "yes_ask": None, "yes_bid_size": Decimal(0), "yes_ask_size": Decimal(0)}
        u = [_noise(self.seed, m.ticker, bucket, i) for i in range(6)]
        mid = min(max(fair + (u[0] - 0.5) * 0.02, 0.0), 1.0)
        half = self.half_spread(m, now, u[1])
        bid = math.floor(round((mid - half) * 100, 6))  # in cents; round() keeps 0.29999999 from dropping a cent
        ask = max(math.ceil(round((mid + half) * 100, 6)), bid + 1)
        show_bid, show_ask = self._sides_shown(fair, u[2], u[3])
        yes_bid = CENT * bid if 1 <= bid <= 99 and show_bid else None
        yes_ask = CENT * ask if 1 <= ask <= 99 and show_ask else None
        return {
            "yes_bid": yes_bid,
            "yes_ask": yes_ask,
            "yes_bid_size": Decimal(int(50 + 950 * u[4])) if yes_bid is not None else Decimal(0),
            "yes_ask_size": Decimal(int(50 + 950 * u[5])) if yes_ask is not None else Decimal(0),
        }

    # ---- wire format ------------------------------------------------------------------------------------
    def market_json(self, m: Market, now: float) -> dict:
        status = self.status(m, now)
        q = self.quote(m, now)
        yes_bid = q["yes_bid"] if q["yes_bid"] is not None else Decimal(0)
        yes_ask = q["yes_ask"] if q["yes_ask"] is not None else Decimal(1)
        settled = status in ("determined", "finalized", "amended", "disputed") and now >= m.close_ts
        result, settlement_value, expiration_value, settlement_ts = "", None, None, None
        overridden = self._overridden(m, now)
        if settled or overridden:
            if overridden:
                result = m.override["result"]
                sv = m.override.get("settlement_value")
                settlement_value = Decimal(sv) if sv is not None else ({"yes": Decimal(1), "no": Decimal(0)}.get(result))
            else:
                result = self.natural_result(m)
                settlement_value = Decimal(1) if result == "yes" else Decimal(0)
            if now >= m.close_ts:
                expiration_value = self.expiration_value(m)
            settlement_ts = iso(m.close_ts + m.settlement_timer)
        last = _noise(self.seed, m.ticker, "last")
        body = {
            "ticker": m.ticker,
            "event_ticker": m.event_ticker,
            "market_type": "binary",
            "title": f"Bitcoin price on {iso(m.close_ts)}?",
            "subtitle": m.yes_sub_title,
            "yes_sub_title": m.yes_sub_title,
            "no_sub_title": m.yes_sub_title,
            "open_time": iso(m.open_ts),
            "close_time": iso(m.close_ts),
            "expected_expiration_time": iso(m.close_ts + m.settlement_timer),
            "expiration_time": iso(m.close_ts + 7 * 86400),
            "latest_expiration_time": iso(m.close_ts + 7 * 86400),
            "settlement_timer_seconds": m.settlement_timer,
            "status": status,
            "response_price_units": "usd_cent",
            "yes_bid_dollars": _fmt_price(yes_bid),
            "yes_ask_dollars": _fmt_price(yes_ask),
            "no_bid_dollars": _fmt_price(Decimal(1) - yes_ask),
            "no_ask_dollars": _fmt_price(Decimal(1) - yes_bid),
            "yes_bid_size_fp": f"{q['yes_bid_size']:.2f}",
            "yes_ask_size_fp": f"{q['yes_ask_size']:.2f}",
            "last_price_dollars": _fmt_price(Decimal(f"{0.05 + 0.9 * last:.2f}")),
            "previous_yes_bid_dollars": "0.0000",
            "previous_yes_ask_dollars": "0.0000",
            "previous_price_dollars": "0.0000",
            "volume_fp": f"{int(5000 * last)}.00",
            "volume_24h_fp": f"{int(2000 * last)}.00",
            "liquidity_dollars": "1000.0000",
            "open_interest_fp": f"{int(3000 * last)}.00",
            "notional_value_dollars": "1.0000",
            "result": result,
            "can_close_early": False,
            "expiration_value": str(expiration_value) if expiration_value is not None else "",
            "strike_type": m.strike_type,
            "rules_primary": "If the simple average of the sixty seconds of CF Benchmarks' Bitcoin Real-Time Index (BRTI) before the close is above the strike, the market resolves to Yes.",
            "rules_secondary": "",
            "price_level_structure": "linear_cent",
            "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
            "updated_time": iso(max(m.open_ts, min(now, m.close_ts))),
        }
        if now >= m.strike_known_ts:
            if m.floor is not None:
                body["floor_strike"] = m.floor
            if m.cap is not None:
                body["cap_strike"] = m.cap
        if settlement_value is not None:
            body["settlement_value_dollars"] = _fmt_price(settlement_value)
        if settlement_ts is not None:
            body["settlement_ts"] = settlement_ts
        return body

    def book(self, m: Market, now: float) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """(YES bids, NO bids), best first, up to BOOK_DEPTH levels each on consecutive cents: Kalshi's books hold
        bids only (a YES ask is 1 - a NO bid). The top level is `quote`'s; deeper sizes are stable per 2-s bucket."""
        q = self.quote(m, now)
        bucket = int(math.floor(now) // 2)
        sides = []
        for name, top, size in (("yes", q["yes_bid"], q["yes_bid_size"]),
                                ("no", None if q["yes_ask"] is None else Decimal(1) - q["yes_ask"], q["yes_ask_size"])):
            levels = []
            if top is not None:
                for k in range(BOOK_DEPTH):
                    price = top - CENT * k
                    if price <= 0:
                        break
                    depth_size = Decimal(int(20 + 480 * _noise(self.seed, m.ticker, bucket, name, k)))
                    levels.append((price, size if k == 0 else depth_size))
            sides.append(levels)
        return sides[0], sides[1]

    def orderbook_json(self, m: Market, now: float, depth: int | None) -> dict:
        """REST's `orderbook_fp`: each side ascending, best bid last; an empty side absent."""
        book: dict[str, list[list[str]]] = {}
        for key, levels in zip(("yes_dollars", "no_dollars"), self.book(m, now)):
            if levels:
                levels = levels[:depth] if depth else levels
                book[key] = [[_fmt_price(p), f"{c:.2f}"] for p, c in reversed(levels)]
        return {"orderbook_fp": book}

    # ---- trading pauses -------------------------------------------------------------------------------------
    def trading_active(self, now: float) -> bool:
        """False in the weekly scheduled pause (Thursday 03:00-05:00 ET, as Kalshi schedules its maintenance) and
        while a test's pause holds (`pause_until`, sim time)."""
        if now < self.pause_until:
            return False
        et = datetime.fromtimestamp(now, tz=timezone.utc).astimezone(ET)
        return not (et.weekday() == PAUSE_WEEKDAY and PAUSE_HOURS[0] <= et.hour < PAUSE_HOURS[1])

    def pause(self, seconds: float) -> None:
        """Pause trading for `seconds` of sim time from now (the `pause` fault)."""
        self.pause_until = max(self.pause_until, self.clock.now() + seconds)

    def exchange_status_json(self, now: float) -> dict:
        active = self.trading_active(now)
        body: dict = {"exchange_active": True, "trading_active": active}
        if not active:
            body["exchange_estimated_resume_time"] = iso(self._resume_at(now))
        return body

    def _resume_at(self, now: float) -> float:
        if now < self.pause_until:
            return self.pause_until
        et = datetime.fromtimestamp(now, tz=timezone.utc).astimezone(ET)
        return et.replace(hour=PAUSE_HOURS[1], minute=0, second=0, microsecond=0).timestamp()

    def series_json(self, series: str) -> dict:
        spec = self.specs[series]
        return {
            "ticker": spec.ticker,
            "frequency": "fifteen_min" if spec.kind == "updown" else "hourly",
            "title": spec.title,
            "category": "Crypto",
            "tags": ["BTC"],
            "settlement_sources": [{"name": "CF Benchmarks", "url": "https://www.cfbenchmarks.com/"}],
            "contract_url": "",
            "fee_type": "quadratic",
            "fee_multiplier": 1,
        }
