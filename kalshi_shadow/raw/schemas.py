"""Column schemas of the raw tables, one place for collectors (writers) and loaders (readers).

Money and counts stay exact: Kalshi prices are DECIMAL(18,4) dollars, Kalshi counts DECIMAL(18,2),
Coinbase prices and sizes DECIMAL(18,8). A missing value is null, never a default.
Timestamps are UTC (`ts` is the exchange's time for the record when it has one, `received_ts` ours).
"""

from __future__ import annotations

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")
PRICE = pl.Decimal(18, 4)
COUNT = pl.Decimal(18, 2)
SPOT = pl.Decimal(18, 8)

SPOT_TICKS = {
    "ts": UTC_TS,  # Coinbase `time` of the match
    "received_ts": UTC_TS,
    "product_id": pl.String,
    "sequence": pl.Int64,
    "trade_id": pl.Int64,
    "price": SPOT,
    "best_bid": SPOT,
    "best_ask": SPOT,
    "best_bid_size": SPOT,
    "best_ask_size": SPOT,
    "last_size": SPOT,
    "side": pl.String,
}

# Public trades of the other spot venues (Kraken, Bitstamp), one row per trade, one raw table per venue so each has
# its own writer sequence and frontier (`warehouse/frontier.py`).
VENUE_TRADES = {
    "ts": UTC_TS,  # the venue's time of the trade
    "received_ts": UTC_TS,
    "symbol": pl.String,  # as the venue names the pair: BTC/USD (Kraken), btcusd (Bitstamp)
    "trade_id": pl.Int64,
    "price": SPOT,
    "size": SPOT,
    "side": pl.String,  # buy | sell (the taker's side)
}

# Kalshi's `cfbenchmarks_value` WebSocket channel (authenticated): CF Benchmarks' index as Kalshi relays it, about
# once a second, with its trailing 60-s average and, in the final minute of a quarter hour, the running average that
# the 15-minute contracts settle on. The index of record when keyed (`pricing/index.py`).
CFB_INDEX_VALUES = {
    "ts": UTC_TS,  # CF Benchmarks' time of the value (the raw frame's `time`)
    "received_ts": UTC_TS,  # ours: what point-in-time joins use
    "kalshi_received_ts": UTC_TS,  # when Kalshi received the frame (`received_at`)
    "index_id": pl.String,  # BRTI
    "value": SPOT,
    "avg_60s": SPOT,  # `avg_60s_data.value`: ticks in [ts - 60 s, ts)
    "avg_60s_ticks": pl.Int64,  # its `window_size`
    "final_minute_avg": SPOT,  # `last_60s_windowed_average_15min.value`, only in the last minute before :00/:15/:30/:45
    "final_minute_ticks": pl.Int64,  # its `window_size` (60 at the close tick)
    "seq": pl.Int64,  # the subscription's message sequence, when sent
}

# A book side as Kalshi holds it: bids only, best first (`price` dollars, `size` contracts).
LEVELS = pl.List(pl.Struct({"price": PRICE, "size": COUNT}))

# Top of book as observed. An empty side ("0.0000" bid / "1.0000" ask on the wire) is null here.
KALSHI_QUOTES = {
    "ts": UTC_TS,  # when the book was read (REST: the page request's send time) or changed (stream: the delta's ts_ms)
    "received_ts": UTC_TS,  # when it reached us (the page's receive time): "seen", what point-in-time joins use
    "ticker": pl.String,
    "event_ticker": pl.String,
    "series_ticker": pl.String,
    "status": pl.String,
    "yes_bid": PRICE,
    "yes_ask": PRICE,
    "no_bid": PRICE,
    "no_ask": PRICE,
    "yes_bid_size": COUNT,
    "yes_ask_size": COUNT,
    "last_price": PRICE,
    "volume": COUNT,
    "open_interest": COUNT,
    "source": pl.String,  # rest_markets | ws_orderbook
    # Depth, from the stream only (NULL from REST pages): the top N levels of each side's bids. A YES buyer takes NO
    # bids (at 1 - price), a NO buyer YES bids. `seq`: the subscription's sequence number of the last message applied.
    "yes_bid_levels": LEVELS,
    "no_bid_levels": LEVELS,
    "seq": pl.Int64,
}

# `GET /exchange/status`, polled every cycle by the REST poller: whether the exchange trades at all (it pauses for
# scheduled maintenance). `ts` is the request's send time, `received_ts` its answer's.
KALSHI_EXCHANGE_STATUS = {
    "ts": UTC_TS,
    "received_ts": UTC_TS,
    "exchange_active": pl.Boolean,
    "trading_active": pl.Boolean,
    "estimated_resume_ts": UTC_TS,
}

# `market_lifecycle_v2` messages (keyed stream): listings, determinations with their result and value, settlements.
KALSHI_LIFECYCLE = {
    "ts": UTC_TS,  # the exchange's time of the event (determination_ts / settled_ts / open_ts), else received_ts
    "received_ts": UTC_TS,
    "ticker": pl.String,
    "event_type": pl.String,  # created | activated | deactivated | close_date_updated | determined | settled | ...
    "result": pl.String,
    "settlement_value": PRICE,
    "raw_json": pl.String,
}

# Market metadata as fetched (one row per market per fetch); `raw_json` keeps the whole payload.
KALSHI_MARKETS = {
    "ts": UTC_TS,  # when fetched
    "ticker": pl.String,
    "event_ticker": pl.String,
    "series_ticker": pl.String,
    "market_type": pl.String,
    "status": pl.String,
    "result": pl.String,
    "strike_type": pl.String,
    "floor_strike": pl.Float64,
    "cap_strike": pl.Float64,
    "open_time": UTC_TS,
    "close_time": UTC_TS,
    "expected_expiration_time": UTC_TS,
    "latest_expiration_time": UTC_TS,
    "settlement_timer_seconds": pl.Int64,
    "settlement_value": PRICE,
    "expiration_value": SPOT,
    "settlement_ts": UTC_TS,
    "yes_sub_title": pl.String,
    "updated_time": UTC_TS,
    "raw_json": pl.String,
}

# Series metadata (fees) as fetched.
KALSHI_SERIES = {
    "ts": UTC_TS,  # when fetched
    "series_ticker": pl.String,
    "title": pl.String,
    "fee_type": pl.String,
    "fee_multiplier": pl.Float64,
    "raw_json": pl.String,
    "effective_ts": UTC_TS,  # when these fees apply: ts for a series read, the scheduled time for a fee change
    "fee_change_id": pl.String,  # set on rows from /series/fee_changes
}

# What happened to a collector: reconnects, sequence gaps, malformed messages, HTTP errors.
COLLECTOR_EVENTS = {
    "ts": UTC_TS,
    "collector": pl.String,  # spot | kraken | bitstamp | index | quotes | books
    "kind": pl.String,  # reconnect | gap | malformed | http_error | rate_limited | out_of_order | silence
    "detail": pl.String,
    "count": pl.Int64,
}

RAW_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "spot_ticks": SPOT_TICKS,
    "kraken_trades": VENUE_TRADES,
    "bitstamp_trades": VENUE_TRADES,
    "cfb_index_values": CFB_INDEX_VALUES,
    "kalshi_quotes": KALSHI_QUOTES,
    "kalshi_markets": KALSHI_MARKETS,
    "kalshi_series": KALSHI_SERIES,
    "kalshi_exchange_status": KALSHI_EXCHANGE_STATUS,
    "kalshi_lifecycle": KALSHI_LIFECYCLE,
    "collector_events": COLLECTOR_EVENTS,
}
RAW_TABLES = tuple(RAW_SCHEMAS)
