"""Kalshi REST poller -> raw `kalshi_quotes` (top of book every cycle), `kalshi_markets` (metadata when it
changes, or every 10 min), `kalshi_series` (fees and scheduled fee changes, at start and every 10 min) and
`kalshi_exchange_status` (whether the exchange trades, every cycle).

When keyed, the book stream (`collectors/books.py`) is the quote source: while its health record says it is
streaming, this poller writes no quotes (terms, fees and status it always writes), and it takes over within
`STREAM_FRESH_SECONDS` when the stream goes down. Unkeyed, it is the only quote source.

One `GET /markets?series_ticker=S&status=open` per series per cycle carries the top of book of every market, so a
cycle costs a few requests. Errors after the client's own retries are counted and the cycle moves on: never a
crash loop. A write that fails (disk full) keeps its rows and the file's sequence number and is retried next cycle,
each failure counted as a `write_failed` event. SIGTERM/SIGINT flush and exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from collectors.health import Health, read_health
from kalshi_shadow.config import ConfigError, Settings
from kalshi_shadow.kalshi.client import KalshiAPIError, KalshiClient, client_from_settings
from kalshi_shadow.kalshi.models import Market
from kalshi_shadow.raw import RawWriter

log = logging.getLogger("collectors.quotes")
STATUS_ALIASES = {"active": "open", "open": "open", "unopened": "unopened", "closed": "closed", "settled": "settled", "paused": "paused"}
METADATA_REFRESH_SECONDS = 600
SERIES_REFRESH_SECONDS = 600
STREAM_FRESH_SECONDS = 10.0  # a streaming health record younger than this means the stream has the books


def quote_row(m: Market, series: str, sent_at: datetime, received_at: datetime) -> dict[str, Any]:
    """A REST book has no exchange timestamp: it was read between the page's request and its answer, so `ts` is
    when the request was sent (its age is at most received - sent) and `received_ts` when we had it."""
    tob = m.top_of_book()
    return {
        "ts": sent_at, "received_ts": received_at, "ticker": m.ticker, "event_ticker": m.event_ticker, "series_ticker": series,
        "status": m.status, "yes_bid": tob.yes_bid, "yes_ask": tob.yes_ask, "no_bid": tob.no_bid, "no_ask": tob.no_ask,
        "yes_bid_size": tob.yes_bid_size, "yes_ask_size": tob.yes_ask_size, "last_price": m.last_price,
        "volume": m.volume, "open_interest": m.open_interest, "source": "rest_markets",
    }


def market_row(m: Market, series: str, ts: datetime) -> dict[str, Any]:
    return {
        "ts": ts, "ticker": m.ticker, "event_ticker": m.event_ticker, "series_ticker": series,
        "market_type": m.market_type, "status": m.status, "result": m.result, "strike_type": m.strike_type,
        "floor_strike": m.floor_strike, "cap_strike": m.cap_strike, "open_time": m.open_time,
        "close_time": m.close_time, "expected_expiration_time": m.expected_expiration_time,
        "latest_expiration_time": m.latest_expiration_time, "settlement_timer_seconds": m.settlement_timer_seconds,
        "settlement_value": m.settlement_value, "expiration_value": m.expiration_value,
        "settlement_ts": m.settlement_ts, "yes_sub_title": m.yes_sub_title, "updated_time": m.updated_time,
        "raw_json": json.dumps(m.raw, separators=(",", ":")),
    }


def _metadata_key(m: Market) -> tuple:
    """What makes a market row worth writing again: anything but the book and its counters."""
    return (m.event_ticker, m.market_type, m.status, m.result, m.strike_type, m.floor_strike, m.cap_strike,
            m.open_time, m.close_time, m.expected_expiration_time, m.latest_expiration_time, m.settlement_timer_seconds,
            m.settlement_value, m.expiration_value, m.settlement_ts, m.yes_sub_title)


class QuotePoller:
    """Polls every series each `interval` s on a fixed schedule. Single-threaded; `stop` ends it between requests."""

    def __init__(self, client: KalshiClient, series: list[str], data_dir: Path, *, interval: float = 5.0,
                 status: str = "open") -> None:
        self.client = client
        self.series = series
        self.interval = interval
        self.status = status
        raw = Path(data_dir) / "raw"
        self.quotes = RawWriter(raw, "kalshi_quotes", flush_rows=20_000, flush_seconds=max(interval, 1.0))
        self.markets = RawWriter(raw, "kalshi_markets", flush_rows=5_000, flush_seconds=max(interval, 1.0))
        self.series_rows = RawWriter(raw, "kalshi_series", flush_rows=100, flush_seconds=0)
        self.status_rows = RawWriter(raw, "kalshi_exchange_status", flush_rows=1000, flush_seconds=max(interval, 1.0))
        self.data_dir = Path(data_dir)
        self.health = Health(data_dir, "quotes")
        self.health.watch(self.quotes, self.markets, self.series_rows, self.status_rows)  # failed writes keep their rows
        self.health.extra["series"] = series
        self._seen: dict[str, tuple[tuple, float]] = {}  # ticker -> (metadata key, monotonic time last written)
        self._series_fetched_at: dict[str, float] = {}
        self.stop = threading.Event()
        self.cycles = 0

    def on_client_event(self, kind: str, detail: str) -> None:
        """The client's per-attempt reports (rate_limited, http_error, timeout, connect_error, malformed)."""
        self.health.event(kind, detail)

    def _failed(self, what: str, exc: Exception) -> None:
        """A request that still failed after the client's retries, or a response we could not use."""
        if isinstance(exc, KalshiAPIError):
            kind = "poll_failed"
        elif isinstance(exc, (ValueError, KeyError, TypeError)):
            kind = "malformed"
        else:
            kind = "poll_error"
        self.health.event(kind, f"{what}: {type(exc).__name__}: {exc}"[:200])
        log.error("%s failed: %s: %s", what, type(exc).__name__, exc, exc_info=kind == "poll_error")

    def _refresh_series(self) -> None:
        """Fees, titles and scheduled fee changes at start and every 10 minutes; a series that failed is tried
        again next cycle. A scheduled change is written with its effective time, so pricing applies it then."""
        for s in self.series:
            if time.monotonic() - self._series_fetched_at.get(s, -1e18) < SERIES_REFRESH_SECONDS or self.stop.is_set():
                continue
            try:
                info = self.client.get_series(s)
                changes = self.client.get_fee_changes(s)
            except Exception as exc:  # noqa: BLE001 - never a crash loop; counted and logged
                self._failed(f"series {s}", exc)
                continue
            now = datetime.now(timezone.utc)
            self.series_rows.append({"ts": now, "series_ticker": info.ticker, "title": info.title, "fee_type": info.fee_type,
                                     "fee_multiplier": info.fee_multiplier, "raw_json": json.dumps(info.raw, separators=(",", ":")),
                                     "effective_ts": now, "fee_change_id": None})
            self.series_rows.extend({"ts": now, "series_ticker": c.series_ticker, "title": info.title, "fee_type": c.fee_type,
                                     "fee_multiplier": c.fee_multiplier, "raw_json": json.dumps(c.raw, separators=(",", ":")),
                                     "effective_ts": c.scheduled_ts, "fee_change_id": c.id}
                                    for c in changes if c.series_ticker == s)
            self._series_fetched_at[s] = time.monotonic()

    def stream_has_books(self) -> bool:
        """The book stream is live: its health record is fresh, connected and says it is streaming (subscribed)."""
        rec = read_health(self.data_dir).get("books") or {}
        try:
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(rec["updated_at"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            return False
        return bool(rec.get("streaming")) and rec.get("status") == "connected" and age < STREAM_FRESH_SECONDS

    def _poll_status(self) -> None:
        try:
            st, sent, received = self.client.get_exchange_status_timed()
        except Exception as exc:  # noqa: BLE001 - a missing status is missing (NULL downstream), never assumed
            self._failed("exchange status", exc)
            return
        self.status_rows.append({"ts": sent, "received_ts": received, "exchange_active": st.exchange_active,
                                 "trading_active": st.trading_active, "estimated_resume_ts": st.estimated_resume})
        self.health.extra["trading_active"] = st.trading_active

    def poll_once(self) -> int:
        """One cycle over every series; returns the number of quotes buffered."""
        self._refresh_series()
        self._poll_status()
        streamed = self.stream_has_books()
        if self.health.extra.get("quotes_from") == "stream" and not streamed:
            log.warning("the book stream stopped streaming: polling quotes again")
        elif self.health.extra.get("quotes_from") == "rest" and streamed:
            log.info("the book stream has the books: quotes from it, this poller stands by")
        self.health.extra["quotes_from"] = "stream" if streamed else "rest"
        written = 0
        for s in self.series:
            if self.stop.is_set():
                break
            try:
                pages = list(self.client.iter_market_pages(series_ticker=s, status=self.status))
            except Exception as exc:  # noqa: BLE001 - the next series and the next cycle go on
                self._failed(f"markets {s}", exc)
                continue
            self.health.message()
            now = time.monotonic()
            changed = []
            for page in pages:  # each page's markets carry that page's own send and receive times
                if not streamed:
                    self.quotes.extend(quote_row(m, s, page.sent_at, page.received_at) for m in page.items)
                for m in page.items:
                    key = _metadata_key(m)
                    seen = self._seen.get(m.ticker)
                    if seen is None or seen[0] != key or now - seen[1] > METADATA_REFRESH_SECONDS:
                        changed.append(market_row(m, s, page.received_at))
                        self._seen[m.ticker] = (key, now)
                written += len(page.items)
            self.markets.extend(changed)
        self._forget_old_markets()
        self.cycles += 1
        self.health.counters["cycles"] = self.cycles
        self.health.extra["markets_tracked"] = len(self._seen)
        self._flush_if_due()
        return written

    def _forget_old_markets(self) -> None:
        """Markets not seen for a while have closed; forgetting them keeps memory flat over months."""
        cutoff = time.monotonic() - 2 * METADATA_REFRESH_SECONDS
        for ticker in [t for t, (_, at) in self._seen.items() if at < cutoff]:
            del self._seen[ticker]

    def _flush_if_due(self, force: bool = False) -> None:
        # Every cycle ends with a file per table, empty if nothing changed: the warehouse then knows the terms and
        # fees as of this cycle are complete, and prices the cycle's quotes without waiting for a change.
        for w in (self.quotes, self.markets, self.series_rows, self.status_rows):
            w.flush(heartbeat=True)
        self.health.rows_acknowledged = self.quotes.rows_flushed
        self.health.files_written = sum(w.files_written for w in (self.quotes, self.markets, self.series_rows, self.status_rows))
        self.health.extra["market_rows_acknowledged"] = self.markets.rows_flushed
        self.health.extra["series_rows_acknowledged"] = self.series_rows.rows_flushed
        self.health.maybe_write(force=force)

    def flush(self) -> None:
        """Write every buffered row and the health record now."""
        self._flush_if_due(force=True)

    def _sleep(self, seconds: float) -> None:
        """Wait for the next cycle, keeping the health record fresh (~2 s) even with a long interval."""
        until = time.monotonic() + seconds
        while not self.stop.wait(max(0.0, min(until - time.monotonic(), self.health.write_every))):
            if time.monotonic() >= until:
                return
            self.health.maybe_write()

    def run(self, seconds: float = 0) -> None:
        """Poll on schedule until `stop` is set or `seconds` (0 = forever) passed; then flush and mark stopped."""
        deadline = time.monotonic() + seconds if seconds > 0 else None
        self.health.status = "running"
        next_at = time.monotonic()
        while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - never a crash loop: count, log, keep the schedule
                self.health.event("cycle_error", f"{type(exc).__name__}: {exc}"[:200])
                log.exception("poll cycle failed")
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                log.warning("poll cycle overran its %.1fs interval by %.1fs", self.interval, -delay)
                self.health.event("overrun", f"by {-delay:.1f}s")
                next_at = time.monotonic()
                delay = 0
            if deadline is not None:
                delay = min(delay, max(deadline - time.monotonic(), 0))
            self._sleep(delay)
        self.health.status = "stopping"
        self._flush_if_due(force=True)
        self.health.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    ap = argparse.ArgumentParser(prog="kalshi-shadow collect-quotes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=settings.kalshi_base_url)
    ap.add_argument("--series", default=",".join(settings.series), help="comma-separated series tickers")
    ap.add_argument("--interval", type=float, default=settings.quote_interval_seconds, help="seconds between cycles")
    ap.add_argument("--status", default="active", choices=sorted(STATUS_ALIASES), help="market status filter ('active' = open)")
    ap.add_argument("--seconds", type=float, default=0, help="run this long, 0 = forever")
    ap.add_argument("--data-dir", type=Path, default=settings.data_dir)
    args = ap.parse_args(argv)
    series = [s.strip() for s in args.series.split(",") if s.strip()]
    if not series or args.interval <= 0:
        ap.error("--series needs at least one ticker and --interval must be > 0")
    poller: QuotePoller | None = None

    def on_event(kind: str, detail: str) -> None:
        if poller is not None:
            poller.on_client_event(kind, detail)

    try:  # signed when KALSHI_API_KEY_ID / KALSHI_PRIVATE_KEY_PATH are set; an unreadable key is a clear error
        client = client_from_settings(replace(settings, kalshi_base_url=args.base_url.rstrip("/")), on_event=on_event)
    except (OSError, ValueError, TypeError) as exc:
        log.error("cannot load the Kalshi private key: %s: %s", type(exc).__name__, exc)
        return 2
    poller = QuotePoller(client, series, args.data_dir, interval=args.interval, status=STATUS_ALIASES[args.status])
    poller.health.extra["signed"] = client.signer is not None
    poller.health.extra["base_url"] = client.base_url
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: poller.stop.set())
    try:
        poller.run(args.seconds)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
