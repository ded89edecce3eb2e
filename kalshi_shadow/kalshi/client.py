"""Synchronous Kalshi market-data client (httpx): signing, a client-side token bucket, backoff, cursor pages.

Retries 429 (Kalshi sends no Retry-After; one is honoured if present), 5xx, timeouts and connection errors with
capped exponential backoff and full jitter, reporting each to `on_event(kind, detail)` so a collector can count them.
Other 4xx raise at once. Read-only by construction: there is no method that sends an order.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, TypeVar

import httpx

from kalshi_shadow.kalshi.auth import KalshiSigner
from kalshi_shadow.kalshi.models import (
    Event,
    ExchangeStatus,
    FeeChange,
    KalshiParseError,
    Market,
    Orderbook,
    Series,
    parse_event,
    parse_fee_change,
    parse_market,
    parse_orderbook,
    parse_series,
)
from kalshi_shadow.kalshi.ratelimit import TokenBucket

log = logging.getLogger(__name__)
EventCallback = Callable[[str, str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """One response page with when its successful request was sent and its answer received (UTC): the book it
    carries was read by the exchange between the two, so `sent_at` bounds its age and `received_at` is when we knew it."""
    items: list[Any]
    sent_at: datetime
    received_at: datetime


class KalshiAPIError(RuntimeError):
    def __init__(self, status: int | None, code: str | None, message: str) -> None:
        super().__init__(f"Kalshi API error {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _ts(value: int | float | datetime | None) -> int | None:
    if value is None:
        return None
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


class KalshiClient:
    def __init__(
        self,
        base_url: str,
        *,
        signer: KalshiSigner | None = None,
        reads_per_second: float = 20.0,
        timeout: float = 10.0,
        max_retries: int = 6,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        on_event: EventCallback | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._path_prefix = httpx.URL(self.base_url).path.rstrip("/")
        self.signer = signer
        self.bucket = TokenBucket(reads_per_second, capacity=max(1.0, 2 * reads_per_second))
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.on_event = on_event or (lambda kind, detail: None)
        self._http = httpx.Client(timeout=timeout, headers={"Accept": "application/json", "User-Agent": "kalshi-shadow"})

    def __enter__(self) -> "KalshiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _sleep_before_retry(self, attempt: int, retry_after: str | None) -> None:
        if retry_after:
            try:
                time.sleep(min(float(retry_after), self.backoff_cap))
                return
            except ValueError:
                pass
        time.sleep(random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt)))

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._get_timed(path, params)[0]

    def _get_timed(self, path: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], datetime, datetime]:
        """The body, when the successful attempt was sent, and when its response was received."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path
        last: str = ""
        for attempt in range(self.max_retries + 1):
            self.bucket.acquire()
            headers = self.signer.headers("GET", self._path_prefix + path) if self.signer else {}
            sent_at = datetime.now(timezone.utc)
            try:
                resp = self._http.get(url, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                kind, last, status, code = "timeout", f"GET {path}: {type(exc).__name__}", None, None
            except httpx.TransportError as exc:
                kind, last, status, code = "connect_error", f"GET {path}: {type(exc).__name__}: {exc}", None, None
            else:
                if resp.status_code == 200:
                    received_at = datetime.now(timezone.utc)
                    try:
                        return resp.json(), sent_at, received_at
                    except ValueError:
                        raise KalshiAPIError(200, "invalid_json", f"GET {path}: body is not JSON") from None
                body = self._error_body(resp)
                status, code = resp.status_code, body.get("code")
                message = body.get("message") or body.get("error") or resp.text[:200]
                if resp.status_code == 429:
                    kind, last = "rate_limited", f"GET {path}: 429 {message}"
                elif resp.status_code >= 500:
                    kind, last = "http_error", f"GET {path}: {resp.status_code} {message}"
                else:
                    raise KalshiAPIError(resp.status_code, code, f"GET {path}: {message}")
            self.on_event(kind, last)
            if attempt == self.max_retries:
                raise KalshiAPIError(status, code or kind, f"giving up after {attempt + 1} attempts: {last}")
            log.warning("retrying %s (attempt %d): %s", path, attempt + 1, last)
            self._sleep_before_retry(attempt, resp.headers.get("retry-after") if kind in ("rate_limited", "http_error") else None)
        raise AssertionError("unreachable")

    @staticmethod
    def _error_body(resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            return {}
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return body["error"]
        return body if isinstance(body, dict) else {}

    def _timed_pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[Page]:
        cursor: str | None = None
        while True:
            body, sent_at, received_at = self._get_timed(path, {**params, "cursor": cursor} if cursor else params)
            yield Page(body.get(key) or [], sent_at, received_at)
            cursor = body.get("cursor") or None
            if not cursor:
                return

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for page in self._timed_pages(path, key, params):
            yield from page.items

    # ---- endpoints ------------------------------------------------------------------------------------------
    def get_series(self, series_ticker: str) -> Series:
        return parse_series(self._get(f"/series/{series_ticker}")["series"])

    def get_fee_changes(self, series_ticker: str) -> list[FeeChange]:
        """Scheduled fee changes of a series."""
        body = self._get("/series/fee_changes", {"series_ticker": series_ticker})
        return self._parse_each(body.get("series_fee_change_arr") or [], parse_fee_change, "fee change")

    def iter_events(self, series_ticker: str | None = None, status: str | None = None, with_nested_markets: bool = False, limit: int = 200) -> Iterator[Event]:
        params = {"series_ticker": series_ticker, "status": status, "limit": limit,
                  "with_nested_markets": "true" if with_nested_markets else None}
        for obj in self._pages("/events", "events", params):
            yield parse_event(obj)

    def _parse_each(self, objs: list[dict[str, Any]], parse: Callable[[dict[str, Any]], T], what: str) -> list[T]:
        """Each object parsed; one that fails is reported as `malformed` and skipped: the rest of the page stands."""
        out = []
        for obj in objs:
            try:
                out.append(parse(obj))
            except KalshiParseError as exc:
                log.warning("skipping malformed %s: %s", what, exc)
                self.on_event("malformed", str(exc))
        return out

    def iter_market_pages(
        self,
        *,
        series_ticker: str | None = None,
        event_ticker: str | None = None,
        status: str | None = None,
        tickers: Iterable[str] | None = None,
        min_close_ts: int | datetime | None = None,
        max_close_ts: int | datetime | None = None,
        min_settled_ts: int | datetime | None = None,
        max_settled_ts: int | datetime | None = None,
        limit: int = 1000,
    ) -> Iterator[Page]:
        """Every matching market, page by page, each page with its own send and receive times."""
        params = {
            "series_ticker": series_ticker, "event_ticker": event_ticker, "status": status, "limit": limit,
            "tickers": ",".join(tickers) if tickers is not None else None,
            "min_close_ts": _ts(min_close_ts), "max_close_ts": _ts(max_close_ts),
            "min_settled_ts": _ts(min_settled_ts), "max_settled_ts": _ts(max_settled_ts),
        }
        for page in self._timed_pages("/markets", "markets", params):
            yield Page(self._parse_each(page.items, parse_market, "market"), page.sent_at, page.received_at)

    def iter_markets(self, **filters: Any) -> Iterator[Market]:
        """Every matching market across pages (filters as `iter_market_pages`)."""
        for page in self.iter_market_pages(**filters):
            yield from page.items

    def get_market(self, ticker: str) -> Market:
        return parse_market(self._get(f"/markets/{ticker}")["market"])

    def get_orderbook(self, ticker: str, depth: int | None = None) -> Orderbook:
        return parse_orderbook(self._get(f"/markets/{ticker}/orderbook", {"depth": depth}))

    def iter_trades(self, ticker: str, min_ts: int | datetime | None = None, max_ts: int | datetime | None = None) -> Iterator[dict[str, Any]]:
        yield from self._pages("/markets/trades", "trades", {"ticker": ticker, "min_ts": _ts(min_ts), "max_ts": _ts(max_ts), "limit": 1000})

    def get_exchange_status(self) -> ExchangeStatus:
        return ExchangeStatus.parse(self._get("/exchange/status"))

    def get_exchange_status_timed(self) -> tuple[ExchangeStatus, datetime, datetime]:
        """The status, when its request was sent and when its answer came."""
        body, sent_at, received_at = self._get_timed("/exchange/status")
        return ExchangeStatus.parse(body), sent_at, received_at


def client_from_settings(settings, on_event: EventCallback | None = None) -> KalshiClient:
    """A client for `Settings`: signed when credentials are configured."""
    signer = KalshiSigner.from_key_file(settings.kalshi_api_key_id, settings.kalshi_private_key_path) if settings.has_kalshi_credentials else None
    return KalshiClient(settings.kalshi_base_url, signer=signer, on_event=on_event)
