"""Parsed Kalshi objects. Prices and counts are `Decimal` straight from the fixed-point strings.

Unknown fields are kept in `raw` and otherwise ignored; a missing required field raises `KalshiParseError`
naming the object and the field. Nothing is defaulted: a missing price stays missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

ZERO = Decimal(0)
ONE = Decimal(1)


class KalshiParseError(ValueError):
    """A payload lacks a required field or has one that does not parse."""


def _where(obj: Mapping[str, Any], kind: str) -> str:
    return f"{kind} {obj.get('ticker') or obj.get('event_ticker') or '?'}"


def _req(obj: Mapping[str, Any], key: str, kind: str) -> Any:
    if key not in obj or obj[key] is None:
        raise KalshiParseError(f"{_where(obj, kind)}: required field {key!r} is missing")
    return obj[key]


def _dec(obj: Mapping[str, Any], key: str, kind: str, *, required: bool) -> Decimal | None:
    if required:
        raw = _req(obj, key, kind)
    else:
        raw = obj.get(key)
        if raw is None or raw == "":
            return None
    if isinstance(raw, float):
        raw = repr(raw)
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise KalshiParseError(f"{_where(obj, kind)}: field {key!r}={raw!r} is not a decimal") from None
    if not value.is_finite():
        raise KalshiParseError(f"{_where(obj, kind)}: field {key!r}={raw!r} is not finite")
    return value


def _time(obj: Mapping[str, Any], key: str, kind: str, *, required: bool = False) -> datetime | None:
    raw = _req(obj, key, kind) if required else obj.get(key)
    if raw in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise KalshiParseError(f"{_where(obj, kind)}: field {key!r}={raw!r} is not an ISO-8601 time") from None


def _float(obj: Mapping[str, Any], key: str) -> float | None:
    raw = obj.get(key)
    return None if raw is None or raw == "" else float(raw)


@dataclass(frozen=True)
class TopOfBook:
    """Best prices with an empty side as None (the wire shows it as bid 0 / ask 1)."""

    yes_bid: Decimal | None
    yes_ask: Decimal | None
    no_bid: Decimal | None
    no_ask: Decimal | None
    yes_bid_size: Decimal | None
    yes_ask_size: Decimal | None


@dataclass(frozen=True)
class Market:
    ticker: str
    event_ticker: str
    market_type: str | None
    status: str
    result: str | None
    strike_type: str | None
    floor_strike: float | None
    cap_strike: float | None
    open_time: datetime | None
    close_time: datetime
    expected_expiration_time: datetime | None
    latest_expiration_time: datetime | None
    settlement_timer_seconds: int | None
    yes_bid: Decimal
    yes_ask: Decimal
    no_bid: Decimal
    no_ask: Decimal
    last_price: Decimal | None
    yes_bid_size: Decimal | None
    yes_ask_size: Decimal | None
    volume: Decimal | None
    volume_24h: Decimal | None
    open_interest: Decimal | None
    settlement_value: Decimal | None
    expiration_value: Decimal | None
    settlement_ts: datetime | None
    yes_sub_title: str | None
    updated_time: datetime | None
    can_close_early: bool | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def top_of_book(self) -> TopOfBook:
        yes_bid = self.yes_bid if self.yes_bid > ZERO else None
        yes_ask = self.yes_ask if self.yes_ask < ONE else None
        no_bid = self.no_bid if self.no_bid > ZERO else None
        no_ask = self.no_ask if self.no_ask < ONE else None
        return TopOfBook(
            yes_bid, yes_ask, no_bid, no_ask,
            self.yes_bid_size if yes_bid is not None else None,
            self.yes_ask_size if yes_ask is not None else None,
        )


def parse_market(obj: Mapping[str, Any]) -> Market:
    k = "market"
    timer = obj.get("settlement_timer_seconds")
    return Market(
        ticker=str(_req(obj, "ticker", k)),
        event_ticker=str(_req(obj, "event_ticker", k)),
        market_type=obj.get("market_type"),
        status=str(_req(obj, "status", k)),
        result=obj.get("result") or None,
        strike_type=obj.get("strike_type") or None,
        floor_strike=_float(obj, "floor_strike"),
        cap_strike=_float(obj, "cap_strike"),
        open_time=_time(obj, "open_time", k),
        close_time=_time(obj, "close_time", k, required=True),
        expected_expiration_time=_time(obj, "expected_expiration_time", k),
        latest_expiration_time=_time(obj, "latest_expiration_time", k),
        settlement_timer_seconds=int(timer) if timer not in (None, "") else None,
        yes_bid=_dec(obj, "yes_bid_dollars", k, required=True),
        yes_ask=_dec(obj, "yes_ask_dollars", k, required=True),
        no_bid=_dec(obj, "no_bid_dollars", k, required=True),
        no_ask=_dec(obj, "no_ask_dollars", k, required=True),
        last_price=_dec(obj, "last_price_dollars", k, required=False),
        yes_bid_size=_dec(obj, "yes_bid_size_fp", k, required=False),
        yes_ask_size=_dec(obj, "yes_ask_size_fp", k, required=False),
        volume=_dec(obj, "volume_fp", k, required=False),
        volume_24h=_dec(obj, "volume_24h_fp", k, required=False),
        open_interest=_dec(obj, "open_interest_fp", k, required=False),
        settlement_value=_dec(obj, "settlement_value_dollars", k, required=False),
        expiration_value=_dec(obj, "expiration_value", k, required=False),
        settlement_ts=_time(obj, "settlement_ts", k),
        yes_sub_title=obj.get("yes_sub_title"),
        updated_time=_time(obj, "updated_time", k),
        can_close_early=obj.get("can_close_early"),
        raw=obj,
    )


@dataclass(frozen=True)
class Series:
    ticker: str
    title: str | None
    fee_type: str
    fee_multiplier: float
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def parse_series(obj: Mapping[str, Any]) -> Series:
    k = "series"
    return Series(
        ticker=str(_req(obj, "ticker", k)),
        title=obj.get("title"),
        fee_type=str(_req(obj, "fee_type", k)),
        fee_multiplier=float(_req(obj, "fee_multiplier", k)),
        raw=obj,
    )


@dataclass(frozen=True)
class FeeChange:
    """A scheduled change of a series' fees (`GET /series/fee_changes`)."""
    id: str
    series_ticker: str
    fee_type: str
    fee_multiplier: float
    scheduled_ts: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def parse_fee_change(obj: Mapping[str, Any]) -> FeeChange:
    """The API reference shows PascalCase keys (`ScheduledTs`), the SDK model snake_case: accept either."""
    k = "fee change"
    pick = {name: obj[pascal] if pascal in obj else obj.get(name)
            for name, pascal in (("id", "ID"), ("series_ticker", "SeriesTicker"), ("fee_type", "FeeType"),
                                 ("fee_multiplier", "FeeMultiplier"), ("scheduled_ts", "ScheduledTs"))}
    return FeeChange(
        id=str(_req(pick, "id", k)),
        series_ticker=str(_req(pick, "series_ticker", k)),
        fee_type=str(_req(pick, "fee_type", k)),
        fee_multiplier=float(_req(pick, "fee_multiplier", k)),
        scheduled_ts=_time(pick, "scheduled_ts", k, required=True),
        raw=obj,
    )


@dataclass(frozen=True)
class Event:
    event_ticker: str
    series_ticker: str
    title: str | None
    markets: list[Market]


def parse_event(obj: Mapping[str, Any]) -> Event:
    return Event(
        event_ticker=str(_req(obj, "event_ticker", "event")),
        series_ticker=str(_req(obj, "series_ticker", "event")),
        title=obj.get("title"),
        markets=[parse_market(m) for m in obj.get("markets") or []],
    )


@dataclass(frozen=True)
class Orderbook:
    """Bids only, as Kalshi sends them; asks follow from the other side's best bid."""

    yes: list[tuple[Decimal, Decimal]]
    no: list[tuple[Decimal, Decimal]]

    @property
    def best_yes_bid(self) -> Decimal | None:
        return max((p for p, _ in self.yes), default=None)

    @property
    def best_no_bid(self) -> Decimal | None:
        return max((p for p, _ in self.no), default=None)

    @property
    def yes_ask(self) -> Decimal | None:
        b = self.best_no_bid
        return None if b is None else ONE - b

    @property
    def no_ask(self) -> Decimal | None:
        b = self.best_yes_bid
        return None if b is None else ONE - b


def parse_orderbook(obj: Mapping[str, Any]) -> Orderbook:
    book = _req(obj, "orderbook_fp", "orderbook")

    def side(name: str) -> list[tuple[Decimal, Decimal]]:
        levels = book.get(name) or []
        try:
            return [(Decimal(str(p)), Decimal(str(c))) for p, c in levels]
        except (InvalidOperation, ValueError, TypeError):
            raise KalshiParseError(f"orderbook: side {name!r} has a malformed level") from None

    return Orderbook(yes=side("yes_dollars"), no=side("no_dollars"))


@dataclass(frozen=True)
class ExchangeStatus:
    exchange_active: bool
    trading_active: bool
    estimated_resume: datetime | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "ExchangeStatus":
        """`GET /exchange/status`: both flags must be JSON booleans (a missing flag is an error, never a guess)."""
        flags = []
        for key in ("exchange_active", "trading_active"):
            raw = _req(body, key, "exchange status")
            if not isinstance(raw, bool):
                raise KalshiParseError(f"exchange status: field {key!r}={raw!r} is not a boolean")
            flags.append(raw)
        return cls(flags[0], flags[1], _time(body, "exchange_estimated_resume_time", "exchange status"))
