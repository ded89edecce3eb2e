"""Edge snapshots: every quote priced by every model, with all its inputs, point in time.

**What a quote may use.** Each quote is priced with what was known when it was *seen* (`received_ts`): the index
proxy's value for that second (the venues' prices received by its start, `pricing/index.py`; `index_source` says
which index), the vol grid point of that minute, the market terms as fetched by then, and
the series fees in force at the quote's time. Inputs older than a fixed bound relative to the quote (`SPOT_LOOKBACK`, ...) are
treated as missing, so a row never depends on where a run or a chunk happened to start.

**When a quote may be priced.** Only once every input is complete up to the time it was seen: its seen time must
be at or before the *pricing frontier* (`warehouse/frontier.py`: the index grid, terms and fees complete). Files
may arrive in any order; a quote whose terms are late simply waits, and is then priced as a backfill would.

**Which quotes a run prices.** The state is a rectangle: every quote with `load_id <= L` and seen at or before
`F` has been priced. A live run with a new frontier F2 and newest load L2 prices exactly the quotes that enter the
rectangle: new loads up to F2, plus older loads between F and F2. Nothing is priced twice, and a late file for an
earlier day is priced when it lands. A backfill of a day deletes the day and reprices its quotes inside the
rectangle, so it equals the live rows (created_at aside).

**How.** In chunks of at most `chunk_quotes()` quotes, so memory does not grow with the size of a day: DuckDB joins
the inputs and builds reasons, every registered model (`kalshi_shadow/models`) computes its probabilities on numpy
arrays, DuckDB writes the rows. No per-row Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from time import perf_counter

import duckdb
import numpy as np
import pyarrow as pa

from kalshi_shadow.config import env_number
from kalshi_shadow.pricing.fees import FEE_MACRO_SQL
from kalshi_shadow.pricing.index import index_frontier, refresh_spot_index
from kalshi_shadow.models import ModelInputs, registered_models
from kalshi_shadow.pricing.rules import RULES, Rules
from kalshi_shadow.pricing.vol import GRID_SECONDS, VolState, ewma_vol, initial_state
from kalshi_shadow.warehouse.frontier import pricing_frontier
from kalshi_shadow.warehouse.connection import transaction

SPOT_LOOKBACK = timedelta(hours=1)   # a spot tick older than this (vs the quote) counts as no spot at all
TERMS_LOOKBACK = timedelta(days=1)   # and market terms (the poller re-writes them at least every 10 minutes)
BOOK_LOOKBACK = timedelta(minutes=15)  # a book's last change is looked for this far back; older counts as this old
STATUS_LOOKBACK = 60  # seconds: an exchange status older than this (vs the quote's seen time) is unknown (NULL)

STATE_LOAD_ID = "kalshi_edge_snapshots.load_id"
STATE_FRONTIER = "kalshi_edge_snapshots.frontier_us"
STATE_MIN_PENDING = "kalshi_edge_snapshots.min_pending_load_id"  # no quote of an older load is still waiting
STATE_NEXT_SEQ = "kalshi_edge_snapshots.next_seq"  # the next quote's snapshot_seq (migration 016)
NEG_INF = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Reasons that leave p_model NULL: the model cannot price, or would price from stale inputs. Such a row keeps its
# reasons and drops out of every score average (one freshness threshold per input, `Rules`, whatever the day).
UNPRICEABLE = ("no_market_terms", "strike_unknown", "closed", "no_spot", "spot_stale", "no_vol", "vol_gap", "quote_stale")

SEEN = "coalesce(q.received_ts, q.ts)"


def refresh_spot(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """The index grid, then the vol grid on it: what the live job's `spot_index` and `spot_vol` steps do, for code
    that prices outside Dagster (the benches, synthetic histories, tests). Returns (seconds, minutes) added."""
    return refresh_spot_index(conn), refresh_spot_vol(conn)


def refresh_spot_vol(conn: duckdb.DuckDBPyConnection) -> int:
    """Extend the one-minute vol grid up to the index's frontier; returns rows added.

    Grid point g carries the index proxy's value at g (`pricing/index.py`: venues' prices received at or before g),
    and is only computed once the index is final up to g, so the grid never changes after it is written. Minutes
    without a fresh index value hold the EWMA (`pricing/vol.py`)."""
    wm = index_frontier(conn)
    if wm is None:
        return 0
    last = next(iter(conn.execute("SELECT grid_ts, price, var_per_minute FROM spot_vol ORDER BY grid_ts DESC LIMIT 1").fetchall()), None)
    if last:  # the minute of the last trade: looked for in the last day first (zone maps), all of the grid if not there
        fresh = conn.execute("""SELECT epoch(max(grid_ts))::BIGINT // 60 FROM spot_vol WHERE log_return IS NOT NULL AND grid_ts > ?""",
                             [last[0] - timedelta(days=1)]).fetchall()[0][0]
        if fresh is None:
            fresh = conn.execute("SELECT epoch(max(grid_ts))::BIGINT // 60 FROM spot_vol WHERE log_return IS NOT NULL").fetchall()[0][0]
        last = (*last, fresh)
    if last:
        start = last[0] + timedelta(minutes=1)
        state = VolState(last[1], last[2], last[3] if last[3] is not None else int(last[0].timestamp()) // 60)
    else:
        first = conn.execute("""SELECT ts, price::DOUBLE FROM spot_index WHERE price IS NOT NULL
                                ORDER BY ts LIMIT 1""").fetchall()
        if not first:
            return 0
        start = (first[0][0] + timedelta(minutes=1)).replace(second=0, microsecond=0)
        state = initial_state(first[0][1], int(start.timestamp()) // 60 - 1)
    end = wm.replace(second=0, microsecond=0)
    if end < start:
        return 0
    conn.execute(GRID_SQL, {"start": start, "end": end})
    g = conn.sql("SELECT minute, price, tick_age FROM _grid ORDER BY i").fetchnumpy()
    prices, tick_age = _floats(g["price"]), _floats(g["tick_age"])
    # The ASOF join gives each point the last index value at or before it, so only a leading run (no value yet in
    # its lookback) is NULL: those points carry the price the previous run ended on.
    prices = np.where(np.isnan(prices), state.last_price, prices)
    rets, var, vol, _ = ewma_vol(g["minute"], prices, tick_age < GRID_SECONDS, state)  # fresh: a trade in the minute
    # The EWMA state is stored per row so the next run resumes exactly where this one ended.
    conn.register("_vol_rows", pa.table({"i": np.arange(len(prices), dtype=np.int64), "price": prices,
                                         "log_return": pa.array(rets, mask=np.isnan(rets)),
                                         "var_per_minute": var, "vol": vol}))
    try:
        conn.execute("""INSERT INTO spot_vol BY NAME
                        SELECT g.grid_ts, g.gap_seconds, r.* EXCLUDE (i)
                        FROM _grid AS g JOIN _vol_rows AS r USING (i)""")
    finally:
        conn.unregister("_vol_rows")
        conn.execute("DROP TABLE _grid")
    return len(prices)


# One row per minute: the index's last value at or before it, the age of the newest trade behind that value, and
# the longest silence of the venues in the minute it covers, (g - 60 s, g]: from the newest trade behind the index to
# g, or between two successive newest trades (the index's updates) that ended inside the minute. A point whose newest
# trade is under a minute old had a trade in its minute ("fresh").
GRID_SQL = """
CREATE OR REPLACE TEMP TABLE _grid AS
WITH grid AS (SELECT generate_series AS grid_ts FROM generate_series($start::TIMESTAMPTZ, $end::TIMESTAMPTZ, INTERVAL 1 MINUTE)),
idx AS (
    SELECT ts, price::DOUBLE AS price, newest_seen FROM spot_index
    WHERE price IS NOT NULL AND ts > $start::TIMESTAMPTZ - INTERVAL 1 DAY AND ts <= $end::TIMESTAMPTZ
), silences AS (  -- each wait between two updates of the index, on the grid point whose minute it ended in
    SELECT date_trunc('minute', newest_seen - INTERVAL 1 MICROSECOND) + INTERVAL 1 MINUTE AS grid_ts,
           max(epoch(newest_seen) - epoch(prev)) AS longest
    FROM (SELECT newest_seen, lag(newest_seen) OVER (ORDER BY ts) AS prev FROM idx)
    WHERE newest_seen > prev GROUP BY 1
)
SELECT row_number() OVER (ORDER BY g.grid_ts) - 1 AS i, g.grid_ts, epoch(g.grid_ts)::BIGINT // 60 AS minute, t.price,
       epoch(g.grid_ts) - epoch(t.newest_seen) AS tick_age,
       greatest(coalesce(epoch(g.grid_ts) - epoch(t.newest_seen), 'infinity'::DOUBLE), coalesce(s.longest, 0)) AS gap_seconds
FROM grid AS g ASOF LEFT JOIN idx AS t ON g.grid_ts >= t.ts
LEFT JOIN silences AS s ON s.grid_ts = g.grid_ts
"""


def _floats(col) -> np.ndarray:
    """A fetchnumpy column as floats with NULL as NaN (DuckDB returns a masked array when there are NULLs)."""
    return np.ma.filled(np.ma.asarray(col).astype(float), np.nan)


_BOOK = int(BOOK_LOOKBACK.total_seconds())

BASE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _base AS
WITH q AS (
    SELECT q.*, {SEEN} AS seen_ts FROM kalshi_quotes AS q
    WHERE ({{pred}}) AND q.ts >= $lo AND q.ts < $hi
), book_hist AS (  -- the same markets' quotes since 2 x BOOK_LOOKBACK before the chunk: enough to judge each change
    SELECT h.ticker, h.ts, {SEEN.replace('q.', 'h.')} AS seen_ts, h.yes_bid, h.yes_ask FROM kalshi_quotes AS h
    WHERE h.ts >= $lo - INTERVAL {2 * _BOOK} SECOND AND h.ts < $hi AND h.ticker IN (SELECT DISTINCT ticker FROM q)
), book_changes AS (  -- a quote changed the book if its top differs from the one before (or none within the lookback)
    SELECT *, lag(ts) OVER w IS NULL OR ts - lag(ts) OVER w > INTERVAL {_BOOK} SECOND
              OR yes_bid IS DISTINCT FROM lag(yes_bid) OVER w OR yes_ask IS DISTINCT FROM lag(yes_ask) OVER w AS changed
    FROM book_hist WINDOW w AS (PARTITION BY ticker ORDER BY ts, seen_ts)
), book AS (  -- per quote: when (seen) its book last changed, within BOOK_LOOKBACK before it and not after it
    SELECT DISTINCT ticker, ts, seen_ts,
           greatest(least(max(seen_ts) FILTER (WHERE changed) OVER (
                              PARTITION BY ticker ORDER BY ts RANGE BETWEEN INTERVAL {_BOOK} SECOND PRECEDING AND CURRENT ROW),
                          seen_ts),
                    seen_ts - INTERVAL {_BOOK} SECOND) AS book_since
    FROM book_changes QUALIFY ts >= $lo
), markets AS (
    SELECT ticker, ts, strike_type, floor_strike, cap_strike, open_time, close_time FROM kalshi_markets
    WHERE ts >= $seen_lo - INTERVAL 2 DAY AND ts <= $seen_hi
), spot AS (  -- the index's second the quote was seen in (and its book last changed in): what was received by its start
    SELECT ts, price::DOUBLE AS price, source, newest_seen FROM spot_index
    WHERE ts >= date_trunc('second', $seen_lo::TIMESTAMPTZ) - INTERVAL {_BOOK} SECOND AND ts <= $seen_hi
), vol AS (
    SELECT grid_ts, vol, gap_seconds FROM spot_vol WHERE grid_ts >= date_trunc('minute', $seen_lo::TIMESTAMPTZ) AND grid_ts <= $seen_hi
), fees AS (  -- each fee schedule from when it applies to when the next one does (a range join: cheaper than ASOF)
    -- A scheduled change applies from its effective time, or, if we only learned of it later, from when we did:
    -- point in time, and a backfill gives the live rows.
    SELECT series_ticker, fee_type, fee_multiplier, valid_from,
           lead(valid_from, 1, 'infinity'::TIMESTAMPTZ) OVER (PARTITION BY series_ticker ORDER BY valid_from, ts) AS valid_to
    FROM (SELECT *, greatest(ts, coalesce(effective_ts, ts)) AS valid_from FROM kalshi_series)
    WHERE valid_from < $hi
), xstatus AS (  -- the exchange's trading status as polled, by when its answer was received
    SELECT coalesce(received_ts, ts) AS x_seen, trading_active AS x_trading FROM kalshi_exchange_status
    WHERE coalesce(received_ts, ts) >= $seen_lo - INTERVAL {STATUS_LOOKBACK} SECOND AND coalesce(received_ts, ts) <= $seen_hi
), joined AS (
    SELECT q.*, x.x_seen, x.x_trading,
           m.strike_type AS m_strike_type, m.floor_strike AS m_floor, m.cap_strike AS m_cap, m.open_time AS m_open, m.close_time AS m_close,
           m.ts AS m_ts,
           s.newest_seen AS s_seen, s.ts AS s_ts, s.price AS s_price, s.source AS s_source, v.vol AS v_vol, v.gap_seconds AS vol_gap_seconds,
           se.fee_type, se.fee_multiplier, bk.book_since, sb.price AS s_book_price
    FROM q
    ASOF LEFT JOIN markets AS m ON q.ticker = m.ticker AND q.seen_ts >= m.ts  -- terms as fetched by the time the quote was seen
    LEFT JOIN spot AS s ON s.ts = date_trunc('second', q.seen_ts)  -- the grid has every second up to its frontier
    LEFT JOIN vol AS v ON v.grid_ts = date_trunc('minute', q.seen_ts)  -- the grid has every minute up to the spot frontier
    LEFT JOIN fees AS se ON q.series_ticker = se.series_ticker AND q.ts >= se.valid_from AND q.ts < se.valid_to AND se.valid_to > $lo
    LEFT JOIN book AS bk ON bk.ticker = q.ticker AND bk.ts = q.ts AND bk.seen_ts = q.seen_ts
    LEFT JOIN spot AS sb ON sb.ts = date_trunc('second', bk.book_since)  -- the index when the book last changed
    ASOF LEFT JOIN xstatus AS x ON q.seen_ts >= x.x_seen  -- the newest status received by the time the quote was seen
), p AS (  -- inputs older than their lookback are missing, whatever the chunk
    SELECT * EXCLUDE (status, m_strike_type, m_floor, m_cap, m_open, m_close, m_ts, s_seen, s_ts, s_price, s_source, v_vol,
                      book_since, s_book_price, x_seen, x_trading),
           CASE WHEN seen_ts - x_seen <= INTERVAL {STATUS_LOOKBACK} SECOND THEN x_trading END AS trading_active,
           -- a source without a status field (a WebSocket feed) gets the market's lifecycle state at the quote
           coalesce(status, CASE WHEN NOT q_fresh_terms THEN NULL WHEN ts >= m_close THEN 'closed'
                                 WHEN ts >= m_open THEN 'active' ELSE 'initialized' END) AS status,
           CASE WHEN q_fresh_terms THEN m_strike_type END AS strike_type, CASE WHEN q_fresh_terms THEN m_floor END AS floor_strike,
           CASE WHEN q_fresh_terms THEN m_cap END AS cap_strike, CASE WHEN q_fresh_terms THEN m_close END AS close_time,
           CASE WHEN q_fresh_spot THEN s_ts END AS spot_ts, CASE WHEN q_fresh_spot THEN s_seen END AS spot_seen,
           CASE WHEN q_fresh_spot THEN s_price END AS spot, CASE WHEN q_fresh_spot THEN s_source END AS index_source,
           v_vol AS vol, epoch(seen_ts) - epoch(book_since) AS book_age_seconds,
           CASE WHEN q_fresh_spot THEN ln(s_price / s_book_price) END AS index_move
    FROM (SELECT *, seen_ts - m_ts <= INTERVAL {int(TERMS_LOOKBACK.total_seconds())} SECOND AS q_fresh_terms,
                 seen_ts - s_seen <= INTERVAL {int(SPOT_LOOKBACK.total_seconds())} SECOND AS q_fresh_spot FROM joined)
)
SELECT
    p.quote_key, p.seen_ts, p.ts AS quote_ts, (p.ts AT TIME ZONE 'UTC')::DATE AS quote_date, p.ticker, p.series_ticker, p.event_ticker,
    p.source AS quote_source, p.status, p.strike_type, p.floor_strike, p.cap_strike, p.close_time AS close_ts,
    epoch(p.close_time) - epoch(p.ts) AS tau_seconds,
    p.spot, p.spot_ts, epoch(p.seen_ts) - epoch(p.spot_seen) AS spot_age_seconds, p.index_source, p.vol,
    p.book_age_seconds, p.index_move, p.trading_active,
    p.yes_bid, p.yes_ask, p.no_bid, p.no_ask, p.yes_bid_size, p.yes_ask_size,
    epoch(p.seen_ts) - epoch(p.ts) AS quote_age_seconds, NULL::DOUBLE AS window_mean,  -- see WINDOW_MEAN_SQL
    $lot::INTEGER AS lot_size, p.fee_type, p.fee_multiplier,
    kalshi_taker_fee(p.yes_ask, $lot, p.fee_type, p.fee_multiplier) / $lot AS fee_yes,
    kalshi_taker_fee(p.no_ask, $lot, p.fee_type, p.fee_multiplier) / $lot AS fee_no,
    CASE WHEN p.yes_bid IS NOT NULL AND p.yes_ask IS NOT NULL THEN (p.yes_bid + p.yes_ask)::DOUBLE / 2 END AS p_mid,
    list_filter([
        CASE WHEN p.strike_type IS NULL THEN 'no_market_terms' END,
        CASE WHEN (p.strike_type IN ('greater', 'greater_or_equal') AND p.floor_strike IS NULL)
               OR (p.strike_type IN ('less', 'less_or_equal') AND p.cap_strike IS NULL)
               OR (p.strike_type = 'between' AND (p.floor_strike IS NULL OR p.cap_strike IS NULL)) THEN 'strike_unknown' END,
        CASE WHEN p.status IS DISTINCT FROM 'active' THEN 'not_active' END,
        CASE WHEN p.close_time <= p.ts THEN 'closed' END,
        CASE WHEN p.spot IS NULL THEN 'no_spot' WHEN epoch(p.seen_ts) - epoch(p.spot_seen) > $max_spot_age THEN 'spot_stale' END,
        CASE WHEN p.spot IS NOT NULL AND p.index_source NOT IN ('proxy', 'official') THEN 'index_degraded' END,
        CASE WHEN p.vol IS NULL THEN 'no_vol' WHEN p.vol_gap_seconds > $max_vol_gap THEN 'vol_gap' END,
        CASE WHEN epoch(p.seen_ts) - epoch(p.ts) > $max_quote_age THEN 'quote_stale' END,
        CASE WHEN p.yes_ask IS NULL THEN 'no_yes_ask' END,
        CASE WHEN p.no_ask IS NULL THEN 'no_no_ask' END,
        CASE WHEN p.yes_bid IS NULL OR p.yes_ask IS NULL THEN 'one_sided'
             WHEN p.yes_ask - p.yes_bid > $max_spread THEN 'spread_wide' END,
        CASE WHEN epoch(p.close_time) - epoch(p.ts) > $max_tau THEN 'too_far_from_close' END,
        CASE WHEN p.fee_type IS NULL OR p.fee_type NOT IN ('quadratic', 'quadratic_with_maker_fees') THEN 'fee_unknown' END
    ], lambda x: x IS NOT NULL) AS base_reasons
FROM p
"""

# The settlement average so far, for the few quotes in their contract's last 60 s. Kalshi settles on the mean of the
# 60 one-second index values in (close - 60 s, close]; here those are the index proxy's seconds (`pricing/index.py`)
# up to the quote's time and seen time, so each uses only what was received by then. A second with no index value
# is left out, never filled. Exact DECIMAL sum, so the figure is the same whatever the thread order. Done after
# `_base` exists, over those rows only, once per distinct (close, quote, seen) time.
WINDOW_MEAN_SQL = """
UPDATE _base AS b SET window_mean = w.window_mean
FROM (
    SELECT k.close_ts, k.quote_ts, k.seen_ts, (sum(i.price) / count(*))::DOUBLE AS window_mean
    FROM (  -- the quotes of one poll share close, quote and seen times: each distinct triple once
        SELECT DISTINCT close_ts, quote_ts, seen_ts FROM _base WHERE close_ts - quote_ts < INTERVAL 60 SECOND
    ) AS k JOIN spot_index AS i
      ON i.ts > k.close_ts - INTERVAL 60 SECOND AND i.ts <= least(k.close_ts, k.quote_ts, k.seen_ts)
    WHERE i.price IS NOT NULL AND i.ts >= $lo - INTERVAL 60 SECOND AND i.ts <= $seen_hi
    GROUP BY ALL
) AS w
WHERE b.close_ts = w.close_ts AND b.quote_ts = w.quote_ts AND b.seen_ts = w.seen_ts
"""

# A priced chunk is stored as two tables (migration 016): each quote's inputs once, in `kalshi_edge_snapshot_quotes`,
# and each model's price of it, in `kalshi_edge_snapshot_models`; the view `kalshi_edge_snapshots` joins them. `_p`
# carries each `_base` row's `snapshot_seq`: the counter (STATE_NEXT_SEQ) onwards, in row order. (Not DuckDB's
# rowid: rows appended inside a transaction are numbered from a large offset, ~2^55 here, until it commits.)
INSERT_QUOTES_SQL = """
INSERT INTO kalshi_edge_snapshot_quotes BY NAME
SELECT _p.snapshot_seq, b.* EXCLUDE (base_reasons), b.base_reasons AS quote_reasons,
       $rules_version AS rules_version, now() AS created_at
FROM _base AS b JOIN _p ON b.rowid = _p.rid ORDER BY _p.snapshot_seq
"""

# Every model's rows from one scan of the chunk: unnest in the select list turns each quote into one row per model.
# The reasons a model adds to its quote's: it could not price (e.g. no fit yet), it prices deep in or out of the
# money, or neither side's EV after fees reaches min_ev.
INSERT_MODELS_SQL = """
INSERT INTO kalshi_edge_snapshot_models BY NAME
WITH per_model AS (
    SELECT _p.snapshot_seq, b.base_reasons, b.yes_ask, b.no_ask, b.fee_yes, b.fee_no,
           unnest({names}) AS model_version, unnest([{columns}]) AS p
    FROM _base AS b JOIN _p ON b.rowid = _p.rid
), priced AS (
    SELECT *, CASE WHEN list_has_any(base_reasons, $unpriceable) THEN NULL ELSE p END AS p_model FROM per_model
), ev AS (
    SELECT *, p_model - yes_ask::DOUBLE - fee_yes AS ev_yes, (1 - p_model) - no_ask::DOUBLE - fee_no AS ev_no FROM priced
)
SELECT snapshot_seq, model_version, p_model,
       list_concat(CASE WHEN p_model IS NULL AND NOT list_has_any(base_reasons, $unpriceable) THEN ['model_unpriced']
                        ELSE []::VARCHAR[] END,
                   CASE WHEN p_model < $min_p THEN ['deep_out_of_money'] WHEN p_model > 1 - $min_p THEN ['deep_in_money']
                        ELSE []::VARCHAR[] END,
                   CASE WHEN p_model IS NOT NULL AND greatest(coalesce(ev_yes, -1), coalesce(ev_no, -1)) < $min_ev
                        THEN ['no_edge'] ELSE []::VARCHAR[] END) AS model_reasons
FROM ev ORDER BY snapshot_seq
"""


def _insert_models_sql(names: list[str]) -> str:
    return INSERT_MODELS_SQL.format(names=repr(names), columns=", ".join(f"_p.p{i}" for i in range(len(names))))


def _reserve_seq(conn: duckdb.DuckDBPyConnection, n: int) -> int:
    """The first of `n` new snapshot_seq values; the counter moves past them (in the caller's transaction)."""
    first = conn.execute("SELECT coalesce(max(value), 1) FROM asset_watermarks WHERE asset = ?", [STATE_NEXT_SEQ]).fetchall()[0][0]
    conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                 [STATE_NEXT_SEQ, first + n])
    return first


def _store_chunk(conn: duckdb.DuckDBPyConnection, rid: np.ndarray, probs: list[np.ndarray], names: list[str], rules: Rules) -> None:
    """Write the chunk's quotes (`_base`, rows `rid`) and each model's probabilities of them as snapshot rows."""
    next_seq = _reserve_seq(conn, len(rid))
    conn.register("_p", pa.table({"rid": np.asarray(rid, dtype=np.int64), "snapshot_seq": next_seq + np.arange(len(rid), dtype=np.int64),
                                  **{f"p{i}": pa.array(p, mask=np.isnan(p)) for i, p in enumerate(probs)}}))
    try:
        conn.execute(INSERT_QUOTES_SQL, {"rules_version": rules.version})
        conn.execute(_insert_models_sql(names), {"unpriceable": list(UNPRICEABLE), "min_p": rules.min_p, "min_ev": rules.min_ev})
    finally:
        conn.unregister("_p")


MODEL_REASONS = ("model_unpriced", "deep_out_of_money", "deep_in_money", "no_edge")  # INSERT_MODELS_SQL's own


def insert_wide_snapshots(conn: duckdb.DuckDBPyConnection, insert_sql: str, params: list | dict | None = None) -> None:
    """Run `insert_sql`, written as `INSERT INTO kalshi_edge_snapshots (...)` the way the table was before the view,
    and store its rows split as the pricing step does: for hand-made snapshots (tests, notebooks). Rows of one
    quote_key must agree on the quote's columns."""
    conn.execute("""CREATE OR REPLACE TEMP TABLE _wide AS
                    SELECT * EXCLUDE (snapshot_id, model_minus_mid, ev_yes, ev_no, snapshot_seq) FROM kalshi_edge_snapshots LIMIT 0""")
    try:
        conn.execute(insert_sql.replace("INSERT INTO kalshi_edge_snapshots", "INSERT INTO _wide", 1), params)
        next_seq = _reserve_seq(conn, conn.execute("SELECT count(DISTINCT quote_key) FROM _wide").fetchall()[0][0])
        conn.execute("""CREATE OR REPLACE TEMP TABLE _wide_q AS
                        SELECT $next + row_number() OVER (ORDER BY quote_ts, quote_key) - 1 AS snapshot_seq, *
                        FROM (SELECT DISTINCT ON (quote_key) * FROM _wide ORDER BY quote_key)""", {"next": next_seq})
        conn.execute("""INSERT INTO kalshi_edge_snapshot_quotes BY NAME
                        SELECT * EXCLUDE (model_version, p_model, reasons),
                               list_filter(reasons, lambda r: NOT list_contains($m, r)) AS quote_reasons
                        FROM _wide_q ORDER BY snapshot_seq""", {"m": list(MODEL_REASONS)})
        conn.execute("""INSERT INTO kalshi_edge_snapshot_models BY NAME
                        SELECT q.snapshot_seq, w.model_version, w.p_model,
                               list_filter(w.reasons, lambda r: list_contains($m, r)) AS model_reasons
                        FROM _wide AS w JOIN _wide_q AS q USING (quote_key) ORDER BY q.snapshot_seq""", {"m": list(MODEL_REASONS)})
    finally:
        conn.execute("DROP TABLE IF EXISTS _wide")
        conn.execute("DROP TABLE IF EXISTS _wide_q")


# The snapshot_seq range of the stored quotes matching {where} (over `kalshi_edge_snapshot_quotes`, with constant
# time bounds, so zone maps prune); 0..-1, an empty range, when there are none.
SEQ_RANGE_SQL = """SELECT coalesce(min(snapshot_seq), 0) AS seq_lo, coalesce(max(snapshot_seq), -1) AS seq_hi
                   FROM kalshi_edge_snapshot_quotes WHERE {where}"""


def seq_range(conn: duckdb.DuckDBPyConnection, where: str, params: dict) -> dict[str, int]:
    """`{"seq_lo", "seq_hi"}` of the quotes matching `where` (SEQ_RANGE_SQL), to add to a query's parameters that
    filters `kalshi_edge_snapshots` on `snapshot_seq BETWEEN $seq_lo AND $seq_hi` too: DuckDB pushes that filter into
    both of the view's tables, while the join's own filter does not prune the model rows, so a time filter alone
    reads every model row ever stored (migration 018)."""
    lo, hi = conn.execute(SEQ_RANGE_SQL.format(where=where), params).fetchall()[0]
    return {"seq_lo": lo, "seq_hi": hi}


def delete_snapshots(conn: duckdb.DuckDBPyConnection, where: str, params: list) -> int:
    """Delete the snapshot rows of the quotes matching `where` (over `kalshi_edge_snapshot_quotes`); returns the
    snapshot rows deleted (quote x model, as the view counts them)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _gone AS SELECT snapshot_seq FROM kalshi_edge_snapshot_quotes WHERE {where}", params)
    try:
        lo, hi = conn.execute("SELECT min(snapshot_seq), max(snapshot_seq) FROM _gone").fetchall()[0]
        if lo is None:
            return 0
        n = conn.execute("""DELETE FROM kalshi_edge_snapshot_models WHERE snapshot_seq BETWEEN ? AND ?
                            AND snapshot_seq IN (SELECT snapshot_seq FROM _gone)""", [lo, hi]).fetchall()[0][0]
        conn.execute("""DELETE FROM kalshi_edge_snapshot_quotes WHERE snapshot_seq BETWEEN ? AND ?
                        AND snapshot_seq IN (SELECT snapshot_seq FROM _gone)""", [lo, hi])
        return n
    finally:
        conn.execute("DROP TABLE _gone")


@dataclass
class SnapshotRun:
    quotes: int = 0
    rows: int = 0
    deleted: int = 0
    chunks: int = 0
    duplicates: int = 0
    days: list[date] = field(default_factory=list)
    quote_ts_range: tuple[datetime, datetime] | None = None
    frontier: datetime | None = None
    inputs: dict[str, datetime | None] = field(default_factory=dict)
    held_back: str | None = None  # why nothing was priced, if so
    model_seconds: dict[str, float] = field(default_factory=dict)  # time in each model (prepare + prob_yes)


def _state(conn: duckdb.DuckDBPyConnection) -> tuple[int, datetime, int]:
    """(newest load priced, frontier priced up to, oldest load that may hold a quote still waiting)."""
    vals = dict(conn.execute("SELECT asset, value FROM asset_watermarks WHERE asset IN (?, ?, ?)",
                             [STATE_LOAD_ID, STATE_FRONTIER, STATE_MIN_PENDING]).fetchall())
    f = vals.get(STATE_FRONTIER)
    return (int(vals.get(STATE_LOAD_ID, 0)), datetime.fromtimestamp(f / 1e6, tz=timezone.utc) if f is not None else NEG_INF,
            int(vals.get(STATE_MIN_PENDING, 0)))


def _set_state(conn: duckdb.DuckDBPyConnection, load_id: int, frontier: datetime, min_pending: int) -> None:
    conn.executemany("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                     [[STATE_LOAD_ID, load_id], [STATE_FRONTIER, int(frontier.timestamp() * 1e6)], [STATE_MIN_PENDING, min_pending]])


def chunk_quotes() -> int:
    """Quotes per chunk (`KALSHI_SHADOW_CHUNK_QUOTES`, default 400k): bounds a run's memory, whatever the day's size
    (peak RSS 1.0 GiB on the default day, 1.3 GiB on a day ten times busier; see BENCHMARKS.md)."""
    return env_number("KALSHI_SHADOW_CHUNK_QUOTES", 400_000, minimum=1, integer=True)


def _chunks(conn: duckdb.DuckDBPyConnection, pred: str, params: dict, *, at_refits: bool = False) -> list[tuple[datetime, datetime]]:
    """Quote-time windows holding at most chunk_quotes() quotes each (whole minutes, so a minute never splits), and
    with `at_refits` split at every refit boundary of a registered model (`Model.refit_seconds`): pricing quotes for
    the first time, the rows before a boundary must be stored before a fit at it reads them (a backfill has them
    already: its old rows go only after the models have prepared). Any split gives the same rows (inputs are
    bounded relative to each quote); windows on `ts` prune by zone maps."""
    limit = chunk_quotes()
    steps = [int(s) for m in registered_models() if (s := getattr(m, "refit_seconds", None))] if at_refits else []
    buckets = conn.execute(f"""SELECT time_bucket(INTERVAL 1 MINUTE, q.ts) AS b, count(*) FROM kalshi_quotes AS q
                               WHERE {pred} GROUP BY 1 ORDER BY 1""", params).fetchall()
    out, lo, n, block = [], None, 0, None
    for b, c in buckets:
        here = tuple(int(b.timestamp()) // s for s in steps)
        if lo is not None and (n + c > limit or here != block):
            out.append((lo, b))
            lo, n = None, 0
        if lo is None:
            lo, block = b, here
        n += c
    if lo is not None:
        out.append((lo, buckets[-1][0] + timedelta(minutes=1)))
    return out


def _price(conn: duckdb.DuckDBPyConnection, pred: str, params: dict, *, lot: int, rules: Rules, run: SnapshotRun) -> None:
    """Price every quote matching `pred` for the first time, chunk by chunk (in the caller's transaction)."""
    for lo, hi in _chunks(conn, pred, params, at_refits=True):
        _price_chunk(conn, pred, params, lo, hi, lot=lot, rules=rules, run=run)


def _price_chunk(conn: duckdb.DuckDBPyConnection, pred: str, params: dict, lo: datetime, hi: datetime, *, lot: int,
                 rules: Rules, run: SnapshotRun, before_insert=None) -> None:
    """Price the quotes matching `pred` with quote time in [lo, hi). `before_insert` runs once the models have
    prepared and priced (a backfill deletes the chunk's old rows there, so a model's fit never misses them)."""
    seen_lo, seen_hi = conn.execute(f"SELECT min({SEEN}), max({SEEN}) FROM kalshi_quotes AS q WHERE ({pred}) AND q.ts >= $lo AND q.ts < $hi",
                                    {**params, "lo": lo, "hi": hi}).fetchall()[0]
    conn.execute(BASE_SQL.format(pred=pred), {
        **params, "lo": lo, "hi": hi, "seen_lo": seen_lo, "seen_hi": seen_hi, "lot": lot, "max_spot_age": rules.max_spot_age_seconds,
        "max_quote_age": rules.max_quote_age_seconds, "max_vol_gap": rules.max_vol_gap_seconds, "max_spread": rules.max_spread, "max_tau": rules.max_tau_seconds})
    conn.execute(WINDOW_MEAN_SQL, {"lo": lo, "seen_hi": seen_hi})
    b = conn.sql("""SELECT rowid AS rid, strike_type, floor_strike, cap_strike, spot, vol, tau_seconds, window_mean, yes_bid, yes_ask,
                           yes_bid_size, yes_ask_size, p_mid, book_age_seconds, index_move, epoch(seen_ts) AS seen, series_ticker
                    FROM _base""").fetchnumpy()
    n = len(b["spot"])
    if n:
        f = {k: _floats(b[k]) for k in ("floor_strike", "cap_strike", "spot", "vol", "tau_seconds", "window_mean", "yes_bid", "yes_ask",
                                        "yes_bid_size", "yes_ask_size", "p_mid", "book_age_seconds", "index_move", "seen")}
        x = ModelInputs(strike_type=np.ma.filled(np.ma.asarray(b["strike_type"], dtype=object), None), floor=f["floor_strike"],
                        cap=f["cap_strike"], spot=f["spot"], vol=f["vol"], tau=f["tau_seconds"], window_mean=f["window_mean"],
                        yes_bid=f["yes_bid"], yes_ask=f["yes_ask"], yes_bid_size=f["yes_bid_size"], yes_ask_size=f["yes_ask_size"],
                        p_mid=f["p_mid"], book_age=f["book_age_seconds"], index_move=f["index_move"], seen_ts=f["seen"],
                        series=np.ma.filled(np.ma.asarray(b["series_ticker"], dtype=object), None))
        models = registered_models()
        probs = []
        for m in models:
            started = perf_counter()
            if hasattr(m, "prepare"):  # optional for a duck-typed model
                m.prepare(conn, x)
            probs.append(np.clip(np.asarray(m.prob_yes(x), dtype=float), 0.0, 1.0))
            run.model_seconds[m.name] = run.model_seconds.get(m.name, 0.0) + perf_counter() - started
        if before_insert is not None:
            before_insert()
        _store_chunk(conn, b["rid"], probs, [m.name for m in models], rules)
        run.days = sorted(set(run.days) | {d for (d,) in conn.execute("SELECT DISTINCT quote_date FROM _base").fetchall()})
        lo_ts, hi_ts = conn.execute("SELECT min(quote_ts), max(quote_ts) FROM _base").fetchall()[0]
        if run.quote_ts_range:
            lo_ts, hi_ts = min(lo_ts, run.quote_ts_range[0]), max(hi_ts, run.quote_ts_range[1])
        run.quote_ts_range = (lo_ts, hi_ts)
        run.quotes += n
        run.rows += n * len(models)
    run.chunks += 1
    conn.execute("DROP TABLE _base")


RUN_ROWS = "quote_date BETWEEN $d0 AND $d1 AND quote_ts BETWEEN $lo AND $hi"  # a run's quote times (constants: zone maps)


def run_params(run: SnapshotRun) -> dict:
    return {"d0": min(run.days), "d1": max(run.days), "lo": run.quote_ts_range[0], "hi": run.quote_ts_range[1]}


def _duplicates(conn: duckdb.DuckDBPyConnection, run: SnapshotRun) -> int:
    """Snapshot ids stored more than once among the quote times this run wrote (must be 0: a blocking check).
    An id encodes its quote's time, so a duplicate of a new row can only lie in that range."""
    if run.quote_ts_range is None:
        return 0
    params = run_params(run)
    return conn.execute(f"""SELECT count(*) - count(DISTINCT snapshot_id) FROM kalshi_edge_snapshots
                            WHERE {RUN_ROWS} AND snapshot_seq BETWEEN $seq_lo AND $seq_hi""",
                        params | seq_range(conn, RUN_ROWS, params)).fetchall()[0][0]


def _capped(conn: duckdb.DuckDBPyConnection, pred: str, params: dict, frontier: datetime) -> datetime:
    """The frontier, lowered if more than four chunks of quotes wait (a catch-up after downtime): one run then
    prices at most that many, in seen-time order, and the next tick goes on. Bounds a run's memory and time."""
    limit, total = 4 * chunk_quotes(), 0
    for minute, n in conn.execute(f"""SELECT time_bucket(INTERVAL 1 MINUTE, {SEEN}) AS m, count(*) FROM kalshi_quotes AS q
                                      WHERE {pred} AND {SEEN} <= $frontier GROUP BY 1 ORDER BY 1""",
                                  {**params, "frontier": frontier}).fetchall():
        total += n
        if total > limit:
            return min(frontier, minute + timedelta(minutes=1) - timedelta(microseconds=1))
    return frontier


def price_new_quotes(conn: duckdb.DuckDBPyConnection, *, lot: int, rules: Rules = RULES) -> SnapshotRun:
    """The live step: price every quote that has entered the rectangle since the last run, on any day."""
    conn.execute(FEE_MACRO_SQL)
    run = SnapshotRun()
    frontier, run.inputs = pricing_frontier(conn)
    with transaction(conn):
        done_load, done_frontier, min_pending = _state(conn)
        # Load ids only grow as rows are appended: the newest is at or after the last one priced (zone maps skip the rest).
        new_load = conn.execute("SELECT coalesce(max(load_id), ?) FROM kalshi_quotes WHERE load_id >= ?",
                                [done_load, done_load]).fetchall()[0][0]
        run.frontier = frontier
        if frontier is None:
            run.held_back = "an input has no complete data yet: " + ", ".join(t for t, v in run.inputs.items() if v is None)
        elif frontier < done_frontier:
            run.held_back = f"the frontier went back to {frontier.isoformat()} (a file is missing from a writer's sequence)"
        else:
            # Loads before min_pending are fully priced, so every branch is a load-id range: zone maps skip history.
            window = "q.load_id >= $min_pending AND q.load_id <= $new_load"
            frontier = _capped(conn, f"{window} AND (q.load_id > $done_load OR {SEEN} > $done_frontier)",
                               {"min_pending": min_pending, "new_load": new_load, "done_load": done_load,
                                "done_frontier": done_frontier}, frontier)
            run.frontier = frontier
            _price(conn, f"""{window} AND {SEEN} <= $frontier AND (q.load_id > $done_load OR {SEEN} > $done_frontier)""",
                   {"min_pending": min_pending, "done_load": done_load, "new_load": new_load, "frontier": frontier,
                    "done_frontier": done_frontier}, lot=lot, rules=rules, run=run)
            still_waiting = conn.execute(f"SELECT min(q.load_id) FROM kalshi_quotes AS q WHERE {window} AND {SEEN} > $frontier",
                                         {"min_pending": min_pending, "new_load": new_load, "frontier": frontier}).fetchall()[0][0]
            _set_state(conn, new_load, frontier, still_waiting if still_waiting is not None else new_load + 1)
        run.duplicates = _duplicates(conn, run)
    return run


def recompute_day(conn: duckdb.DuckDBPyConnection, day: date, *, lot: int, rules: Rules = RULES) -> SnapshotRun:
    """The backfill: reprice the day's quotes that the live path has reached, replacing its rows chunk by chunk.

    Each chunk is one transaction (delete the chunk's quote times, insert their new rows), so memory stays that of
    a chunk however big the day; a reader between chunks sees correct rows, old or new, which are equal."""
    conn.execute(FEE_MACRO_SQL)
    run = SnapshotRun(days=[day])
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    started = conn.execute("SELECT now()").fetchall()[0][0]
    done_load, done_frontier, _ = _state(conn)
    run.frontier = done_frontier if done_frontier > NEG_INF else None
    pred = f"q.ts >= $day_start AND q.ts < $day_end AND q.load_id <= $done_load AND {SEEN} <= $done_frontier"
    params = {"day_start": start, "day_end": start + timedelta(days=1), "done_load": done_load, "done_frontier": done_frontier}
    for lo, hi in _chunks(conn, pred, params):
        def delete_old(lo=lo, hi=hi) -> None:
            run.deleted += delete_snapshots(conn, "quote_date = ? AND quote_ts >= ? AND quote_ts < ?", [day, lo, hi])

        with transaction(conn):
            _price_chunk(conn, pred, params, lo, hi, lot=lot, rules=rules, run=run, before_insert=delete_old)
    with transaction(conn):  # rows of the day that no chunk rewrote (their quotes are outside the live rectangle)
        run.deleted += delete_snapshots(conn, "quote_date = ? AND created_at < ?", [day, started])
        run.duplicates = _duplicates(conn, run)
    return run
