"""What a report reads: one query per table, over [start, end) by UTC day, aggregated in DuckDB to event level.

`collect(query, period)` takes any `query(sql, params) -> polars.DataFrame`: a Dagster step passes its warehouse
connection, the CLI a read-only `Reader` (which opens the file per query). Every model-vs-mid figure is computed
on paired rows (`excluded_reason IS NULL`) and carries its row count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable

import polars as pl

from kalshi_shadow.pricing.index import QUORUM, VENUES

Query = Callable[[str, dict], pl.DataFrame]

HORIZON = """CASE WHEN {t} < 60 THEN '0-1m' WHEN {t} < 900 THEN '1-15m' WHEN {t} < 3600 THEN '15-60m'
                  WHEN {t} < 6 * 3600 THEN '1-6h' ELSE '6h+' END"""
HORIZONS = ["0-1m", "1-15m", "15-60m", "1-6h", "6h+"]
EV_EDGES = [-0.10, -0.05, -0.02, 0.0, 0.02, 0.05, 0.10]  # predicted-EV buckets (dollars per contract)
N_BINS = 10
# The settlement check's sources: the official index (when keyed) by its own timestamps, as settlement averages it;
# the proxy and each venue alone on the index grid's seconds (what was received by each second: a real-time estimate).
INDEX_SOURCES = ("official", "proxy", *VENUES)
INDEX_SOURCES_SQL = ", ".join(f"'{x}'" for x in INDEX_SOURCES)
INDEX_VALUES_SQL = ", ".join("o.value" if x == "official" else f"s.{x}" for x in INDEX_SOURCES)
VENUE_NAMES_SQL = ", ".join(f"'{v}'" for v in VENUES)
VENUE_COLS_SQL = ", ".join(VENUES)
GAP_SECONDS = 120  # a silence of the spot or quote feed longer than this is listed as a gap


@dataclass(frozen=True)
class Period:
    kind: str     # daily | weekly
    start: date
    days: int

    @property
    def end(self) -> date:
        return self.start + timedelta(days=self.days)

    @property
    def label(self) -> str:
        if self.kind == "daily":
            return self.start.isoformat()
        y, w, _ = self.start.isocalendar()
        return f"{y}-W{w:02d}"

    @property
    def t0(self) -> datetime:
        return datetime.combine(self.start, time(0), tzinfo=timezone.utc)

    @property
    def t1(self) -> datetime:
        return datetime.combine(self.end, time(0), tzinfo=timezone.utc)

    @property
    def params(self) -> dict:
        return {"lo": self.start, "hi": self.end, "t0": self.t0, "t1": self.t1}

    @classmethod
    def day(cls, d: date | str) -> "Period":
        return cls("daily", date.fromisoformat(d) if isinstance(d, str) else d, 1)

    @classmethod
    def week(cls, w: date | str) -> "Period":
        """A week from its Monday (a date or the weekly partition key) or from ISO 'YYYY-Www'."""
        if isinstance(w, str):
            m = re.fullmatch(r"(\d{4})-?W(\d{2})", w.strip())
            w = date.fromisocalendar(int(m[1]), int(m[2]), 1) if m else date.fromisoformat(w)
        return cls("weekly", w - timedelta(days=w.weekday()), 7)


SQL: dict[str, str] = {
    # ---- coverage -------------------------------------------------------------------------------------------------
    "feeds": """
        WITH spot AS (SELECT coalesce(received_ts, ts) AS t FROM spot_ticks WHERE coalesce(received_ts, ts) >= $t0 AND coalesce(received_ts, ts) < $t1),
             quotes AS (SELECT coalesce(received_ts, ts) AS t FROM kalshi_quotes WHERE ts >= $t0 AND ts < $t1)
        SELECT 'spot' AS feed, count(*) AS rows, count(DISTINCT date_trunc('minute', t)) / 60.0 AS hours, min(t) AS first, max(t) AS last FROM spot
        UNION ALL
        SELECT 'quotes', count(*), count(DISTINCT date_trunc('minute', t)) / 60.0, min(t), max(t) FROM quotes""",
    # Silences longer than GAP_SECONDS, including one from the period's start to the first row and from the last
    # row to the period's end (or to now, for a period still running).
    "gaps": f"""
        WITH t AS (
            SELECT 'spot' AS feed, coalesce(received_ts, ts) AS t FROM spot_ticks WHERE coalesce(received_ts, ts) >= $t0 AND coalesce(received_ts, ts) < $t1
            UNION ALL SELECT 'quotes', coalesce(received_ts, ts) FROM kalshi_quotes WHERE ts >= $t0 AND ts < $t1
            UNION ALL SELECT f, $t0::TIMESTAMPTZ FROM (VALUES ('spot'), ('quotes')) AS v(f)
            UNION ALL SELECT f, least($t1::TIMESTAMPTZ, now()) FROM (VALUES ('spot'), ('quotes')) AS v(f)
        ), g AS (SELECT feed, lag(t) OVER (PARTITION BY feed ORDER BY t) AS gap_start, t AS gap_end FROM t)
        SELECT feed, gap_start, gap_end, epoch(gap_end) - epoch(gap_start) AS seconds FROM g
        WHERE epoch(gap_end) - epoch(gap_start) > {GAP_SECONDS} ORDER BY feed, gap_start""",
    "coverage_series": """
        WITH q AS (SELECT series_ticker, count(*) AS quotes, count(DISTINCT ticker) AS contracts_seen
                   FROM kalshi_quotes WHERE ts >= $t0 AND ts < $t1 GROUP BY 1),
             s AS (SELECT series_ticker, model_version, count(*) AS snapshots, count(p_model) AS priceable,
                          count(*) FILTER (WHERE len(reasons) = 0) AS tradable,
                          count(*) FILTER (WHERE p_model IS NOT NULL AND p_mid IS NOT NULL) AS paired_priced
                   FROM kalshi_edge_snapshots WHERE quote_date >= $lo AND quote_date < $hi AND snapshot_seq BETWEEN $seq_lo AND $seq_hi GROUP BY 1, 2),
             c AS (SELECT q.series_ticker, count(*) FILTER (WHERE c.outcome IS NOT NULL) AS settled,
                          count(*) FILTER (WHERE c.outcome IS NULL AND c.close_ts <= now()) AS pending_closed,
                          count(*) FILTER (WHERE c.outcome IS NULL AND (c.close_ts > now() OR c.close_ts IS NULL)) AS pending_open,
                          count(*) FILTER (WHERE c.outcome = 'void') AS void
                   FROM (SELECT DISTINCT series_ticker, ticker FROM kalshi_quotes WHERE ts >= $t0 AND ts < $t1) AS q
                   LEFT JOIN kalshi_contracts AS c USING (ticker) GROUP BY 1),
             sc AS (SELECT series_ticker, model_version, count(*) AS scored, count(*) FILTER (WHERE excluded_reason IS NULL) AS paired
                    FROM kalshi_edge_snapshot_scores WHERE quote_date >= $lo AND quote_date < $hi AND snapshot_seq BETWEEN $seq_lo AND $seq_hi GROUP BY 1, 2)
        SELECT s.series_ticker AS series, s.model_version AS model, q.contracts_seen, c.settled, c.pending_closed, c.pending_open,
               c.void, q.quotes, s.snapshots, s.priceable, s.tradable, coalesce(sc.scored, 0) AS scored, coalesce(sc.paired, 0) AS paired
        FROM s LEFT JOIN q USING (series_ticker) LEFT JOIN c USING (series_ticker) LEFT JOIN sc USING (series_ticker, model_version)
        ORDER BY 1, 2""",
    # ---- calibration (paired rows) ----------------------------------------------------------------------------------
    "calibration": f"""
        SELECT x.model_version AS model, x.series_ticker AS series, {HORIZON.format(t='x.tau_seconds')} AS horizon,
               c.event_ticker AS event, count(*) AS n, sum(brier_model) AS brier_model, sum(brier_mid) AS brier_mid,
               sum(logloss_model) AS logloss_model, sum(logloss_mid) AS logloss_mid
        FROM kalshi_edge_snapshot_scores AS x JOIN kalshi_contracts AS c USING (ticker)
        WHERE x.quote_date >= $lo AND x.quote_date < $hi AND x.snapshot_seq BETWEEN $seq_lo AND $seq_hi AND x.excluded_reason IS NULL
        GROUP BY ALL""",
    # Per forecaster (each model, and the mid on the champion's paired rows), bin and event.
    "reliability": f"""
        WITH r AS (
            SELECT x.model_version AS forecaster, x.p_model AS p, x.y, c.event_ticker AS event
            FROM kalshi_edge_snapshot_scores AS x JOIN kalshi_contracts AS c USING (ticker)
            WHERE x.quote_date >= $lo AND x.quote_date < $hi AND x.snapshot_seq BETWEEN $seq_lo AND $seq_hi AND x.excluded_reason IS NULL
            UNION ALL
            SELECT 'market mid', x.p_mid, x.y, c.event_ticker
            FROM kalshi_edge_snapshot_scores AS x JOIN kalshi_contracts AS c USING (ticker)
            WHERE x.quote_date >= $lo AND x.quote_date < $hi AND x.snapshot_seq BETWEEN $seq_lo AND $seq_hi AND x.excluded_reason IS NULL AND x.model_version = $champion
        )
        SELECT forecaster, event, least(floor(p * {N_BINS}), {N_BINS - 1})::INTEGER AS bin, count(*) AS n,
               sum(p) AS sum_p, sum(y) AS sum_y, sum((p - y) ^ 2) AS sum_brier
        FROM r GROUP BY ALL""",
    # ---- edge quality: each side at the ask, on every priced row with that ask (settled, not void) -----------------
    "edge": """
        WITH r AS (
            SELECT x.model_version AS model, 'yes' AS side, x.ev_yes AS ev, x.pnl_yes AS pnl, c.event_ticker AS event,
                   len(x.reasons) = 0 AS tradable
            FROM kalshi_edge_snapshot_scores AS x JOIN kalshi_contracts AS c USING (ticker)
            WHERE x.quote_date >= $lo AND x.quote_date < $hi AND x.snapshot_seq BETWEEN $seq_lo AND $seq_hi AND x.outcome <> 'void' AND x.ev_yes IS NOT NULL AND x.pnl_yes IS NOT NULL
            UNION ALL
            SELECT x.model_version, 'no', x.ev_no, x.pnl_no, c.event_ticker, len(x.reasons) = 0
            FROM kalshi_edge_snapshot_scores AS x JOIN kalshi_contracts AS c USING (ticker)
            WHERE x.quote_date >= $lo AND x.quote_date < $hi AND x.snapshot_seq BETWEEN $seq_lo AND $seq_hi AND x.outcome <> 'void' AND x.ev_no IS NOT NULL AND x.pnl_no IS NOT NULL
        )
        SELECT model, event, len(list_filter($edges::DOUBLE[], lambda v: r.ev > v))::INTEGER AS bucket,
               count(*) AS n, sum(ev) AS sum_ev, sum(pnl) AS sum_pnl, count(*) FILTER (WHERE tradable) AS n_tradable
        FROM r GROUP BY ALL""",
    # ---- decisions ----------------------------------------------------------------------------------------------
    "takes": """
        SELECT rule_set, rule_set_version AS version, decided_ts, settled_ts, ticker, series_ticker AS series, event_ticker AS event,
               side, contracts, cost, ev_per_contract, ev_per_contract * contracts AS predicted_ev, outcome, realised_pnl
        FROM kalshi_would_trades WHERE action = 'take' AND decision_date >= $lo AND decision_date < $hi
        ORDER BY decided_ts""",
    "skips": """
        SELECT rule_set, rule_set_version AS version, reason, count(*) AS logged
        FROM kalshi_would_trades WHERE action = 'skip' AND decision_date >= $lo AND decision_date < $hi
        GROUP BY ALL ORDER BY 1, 2, 4 DESC""",
    # Equity through the period, its drawdown from the running peak of the whole history before it.
    "bankroll": """
        WITH b AS (SELECT rule_set, rule_set_version AS version, ts, cash, open_exposure, equity_at_cost,
                          equity_at_cost - max(equity_at_cost) OVER (PARTITION BY rule_set_version ORDER BY step) AS drawdown
                   FROM kalshi_bankroll WHERE ts < $t1)
        SELECT * FROM b WHERE ts >= $t0 ORDER BY version, ts""",
    # ---- drift (paired snapshots) ----------------------------------------------------------------------------------
    "drift": f"""
        SELECT model_version AS model, time_bucket(to_seconds($bucket_seconds), quote_ts) AS bucket,
               {HORIZON.format(t='tau_seconds')} AS horizon, count(*) AS n, avg(p_model - p_mid) AS mean_diff,
               avg(abs(p_model - p_mid)) AS mean_abs_diff
        FROM kalshi_edge_snapshots
        WHERE quote_date >= $lo AND quote_date < $hi AND snapshot_seq BETWEEN $seq_lo AND $seq_hi AND p_model IS NOT NULL AND p_mid IS NOT NULL
        GROUP BY ALL ORDER BY 1, 2, 3""",
    "disagreements": """
        SELECT s.model_version AS model, s.quote_ts, s.ticker, s.tau_seconds, s.p_model, s.p_mid, s.p_model - s.p_mid AS diff,
               c.outcome, CASE WHEN c.outcome IN ('yes', 'no') THEN
                   CASE WHEN abs(s.p_model - c.settlement_value::DOUBLE) < abs(s.p_mid - c.settlement_value::DOUBLE) THEN 'model'
                        ELSE 'mid' END END AS closer
        FROM kalshi_edge_snapshots AS s LEFT JOIN kalshi_contracts AS c USING (ticker)
        WHERE s.quote_date >= $lo AND s.quote_date < $hi AND s.snapshot_seq BETWEEN $seq_lo AND $seq_hi AND s.p_model IS NOT NULL AND s.p_mid IS NOT NULL
        ORDER BY abs(s.p_model - s.p_mid) DESC, s.quote_ts LIMIT 12""",
    # ---- the settlement index (issue 16) ---------------------------------------------------------------------------
    # Each index source's 60-s mean before each settled contract's close, from the index grid (`spot_index`: the
    # official index where recorded, the proxy, and each venue's own latest price per second), rounded to the cent as
    # Kalshi rounds, against the exchange's result and expiration value. Paired: only contracts where every source
    # recorded in the period (the official index only when keyed) has all 60 seconds.
    "index_settlement": f"""
        WITH c AS (
            SELECT ticker, strike_type, floor_strike AS f, cap_strike AS k, close_ts, outcome, expiration_value::DOUBLE AS expiration
            FROM kalshi_contracts
            WHERE close_ts >= $t0 AND close_ts < $t1 AND outcome IN ('yes', 'no') AND expiration_value IS NOT NULL
        ), window_seconds AS (  -- the 60 grid seconds in (close - 60 s, close]: an equi-join, not a range join
            SELECT *, unnest(generate_series(date_trunc('second', close_ts) - INTERVAL 59 SECOND, date_trunc('second', close_ts),
                                             INTERVAL 1 SECOND)) AS ts
            FROM c
        ), official AS (  -- per second, the official value stamped in it (CF Benchmarks' time, not when received)
            SELECT date_trunc('second', ts) AS ts, arg_max(value, ts) AS value FROM cfb_index_values
            WHERE index_id = 'BRTI' AND ts > $t0 - INTERVAL 61 SECOND AND ts < $t1 + INTERVAL 1 SECOND GROUP BY 1
        ), v AS (
            SELECT w.ticker, w.strike_type, w.f, w.k, w.outcome, w.expiration,
                   unnest([{INDEX_SOURCES_SQL}]) AS source, unnest([{INDEX_VALUES_SQL}])::DOUBLE AS v
            FROM window_seconds AS w JOIN spot_index AS s USING (ts) LEFT JOIN official AS o USING (ts)
        ), w AS (
            SELECT ticker, source, count(v) AS n, round(avg(v), 2) AS mean, any_value(expiration) AS expiration,
                   any_value(outcome) AS outcome, any_value(strike_type) AS strike_type, any_value(f) AS f, any_value(k) AS k
            FROM v GROUP BY ticker, source
        ), recorded AS (SELECT source FROM w GROUP BY source HAVING max(n) > 0),
        paired AS (
            SELECT ticker FROM w WHERE source IN (SELECT source FROM recorded)
            GROUP BY ticker HAVING min(n) = 60 AND count(*) = (SELECT count(*) FROM recorded)
        )
        SELECT source, count(*) AS contracts,
               count(*) FILTER (WHERE outcome = CASE WHEN CASE strike_type
                   WHEN 'greater' THEN mean > f WHEN 'greater_or_equal' THEN mean >= f WHEN 'less' THEN mean < k
                   WHEN 'less_or_equal' THEN mean <= k WHEN 'between' THEN mean >= f AND mean <= k END
                   THEN 'yes' ELSE 'no' END) AS same_result,
               avg(abs(mean - expiration)) AS mae, max(abs(mean - expiration)) AS max_error
        FROM w WHERE ticker IN (SELECT ticker FROM paired) AND source IN (SELECT source FROM recorded)
        GROUP BY source ORDER BY array_position([{INDEX_SOURCES_SQL}], source)""",
    # Each venue's basis to the proxy per UTC day, over the seconds the proxy had a quorum: its mean and spread, and
    # how long it was stale or excluded for disagreeing.
    "index_basis": f"""
        WITH s AS (
            SELECT (ts AT TIME ZONE 'UTC')::DATE AS day, n_venues, proxy::DOUBLE AS proxy, excluded,
                   unnest([{VENUE_NAMES_SQL}]) AS venue, unnest([{VENUE_COLS_SQL}])::DOUBLE AS v
            FROM spot_index WHERE ts >= $t0 AND ts < $t1
        )
        SELECT day, venue, count(*) AS seconds, count(v) FILTER (WHERE proxy IS NOT NULL) AS seconds_fresh,
               count(*) FILTER (WHERE list_contains(excluded, venue)) AS seconds_excluded,
               avg((v / proxy - 1) * 1e4) FILTER (WHERE n_venues >= {QUORUM} AND NOT list_contains(excluded, venue)) AS mean_bp,
               stddev_samp((v / proxy - 1) * 1e4) FILTER (WHERE n_venues >= {QUORUM} AND NOT list_contains(excluded, venue)) AS sd_bp,
               quantile_cont(abs(v / proxy - 1) * 1e4, 0.95) FILTER (WHERE n_venues >= {QUORUM} AND NOT list_contains(excluded, venue)) AS p95_abs_bp
        FROM s GROUP BY day, venue ORDER BY day, array_position([{VENUE_NAMES_SQL}], venue)""",
    # The proxy against the official index per UTC day, over the seconds both had a value (the official index only
    # when keyed): how far pricing on the proxy alone would have been from the index of record.
    "index_official_basis": f"""
        SELECT (ts AT TIME ZONE 'UTC')::DATE AS day, count(official) AS seconds_official,
               count(*) FILTER (WHERE official IS NOT NULL AND proxy IS NOT NULL AND n_venues >= {QUORUM}) AS seconds_both,
               avg((proxy / official - 1) * 1e4) FILTER (WHERE n_venues >= {QUORUM}) AS mean_bp,
               stddev_samp((proxy / official - 1) * 1e4) FILTER (WHERE n_venues >= {QUORUM}) AS sd_bp,
               quantile_cont(abs(proxy / official - 1) * 1e4, 0.95) FILTER (WHERE n_venues >= {QUORUM}) AS p95_abs_bp,
               avg(abs(proxy - official)) FILTER (WHERE n_venues >= {QUORUM}) AS mean_abs_usd
        FROM spot_index WHERE ts >= $t0 AND ts < $t1 AND official IS NOT NULL
        GROUP BY ALL ORDER BY day""",
    "index_sources": """
        SELECT coalesce(source, 'none') AS source, count(*) AS seconds FROM spot_index WHERE ts >= $t0 AND ts < $t1
        GROUP BY ALL ORDER BY seconds DESC""",
    # ---- trends: one row per UTC day (weekly report) and per ISO week up to the period's end -----------------------
    "trend": """
        WITH sc AS (
            SELECT date_trunc($unit, quote_date)::DATE AS period, model_version AS model, count(*) AS n_paired,
                   avg(brier_model) AS brier_model, avg(brier_mid) AS brier_mid,
                   avg(logloss_model) AS logloss_model, avg(logloss_mid) AS logloss_mid
            FROM kalshi_edge_snapshot_scores
            WHERE excluded_reason IS NULL AND quote_date < $hi AND quote_date >= $trend_lo AND snapshot_seq BETWEEN $seq_lo AND $seq_hi
            GROUP BY ALL
        ), tk AS (  -- per rule set *version*: an edited set's replayed log is another version, never summed with the old
            SELECT date_trunc($unit, decision_date)::DATE AS period, rule_set_version, count(*) AS takes,
                   sum(realised_pnl) AS realised_pnl, count(realised_pnl) AS settled_takes
            FROM kalshi_would_trades WHERE action = 'take' AND decision_date < $hi AND decision_date >= $trend_lo GROUP BY ALL
        )
        SELECT 'score' AS kind, period, model AS name, n_paired AS n, brier_model AS a, brier_mid AS b,
               1 - brier_model / nullif(brier_mid, 0) AS c, NULL::DOUBLE AS d FROM sc
        UNION ALL
        SELECT 'takes', period, rule_set_version, takes, realised_pnl, NULL, NULL, settled_takes FROM tk
        ORDER BY kind, name, period""",
}


@dataclass
class ReportData:
    period: Period
    frames: dict[str, pl.DataFrame]
    daily_trend: pl.DataFrame | None = None
    weekly_trend: pl.DataFrame | None = None


def collect(query: Query, period: Period, *, champion: str | None = None) -> ReportData:
    from kalshi_shadow.pricing.probability import CHAMPION

    p = period.params
    extra = {"champion": champion or CHAMPION, "edges": EV_EDGES, "bucket_seconds": 3600 if period.kind == "daily" else 6 * 3600,
             **_seqs(query, p["lo"], p["hi"])}
    frames: dict[str, pl.DataFrame] = {}
    for name, sql in SQL.items():
        if name == "trend":
            continue
        used = {k: v for k, v in {**p, **extra}.items() if f"${k}" in sql}
        frames[name] = query(sql, used)
    data = ReportData(period, frames)
    if period.kind == "weekly":
        for unit, lo in (("day", period.start), ("week", period.start - timedelta(weeks=12))):
            frame = query(SQL["trend"], {"unit": unit, "hi": period.end, "trend_lo": lo, **_seqs(query, lo, period.end)})
            if unit == "day":
                data.daily_trend = frame
            else:
                data.weekly_trend = frame
    return data


def _seqs(query: Query, lo, hi) -> dict:
    """The snapshot_seq range of the quote days [lo, hi): every snapshot query filters on it too, which prunes the
    view's model rows (`pricing/snapshots.py: seq_range`)."""
    from kalshi_shadow.pricing.snapshots import SEQ_RANGE_SQL

    return query(SEQ_RANGE_SQL.format(where="quote_date >= $lo AND quote_date < $hi"), {"lo": lo, "hi": hi}).row(0, named=True)


def duckdb_query(conn) -> Query:
    """A `Query` on an open DuckDB connection (a Dagster step's)."""
    return lambda sql, params: conn.sql(sql, params=params).pl()
