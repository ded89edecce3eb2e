"""Issue 3: fees to the cent, the probability model against closed forms, point-in-time snapshots,
and backfill == incremental, with real DuckDB files and real Dagster materializations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from scipy.stats import norm

from kalshi_shadow.defs import pricing
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.pricing.fees import FEE_MACRO_SQL, order_fee
from kalshi_shadow.models import model_names
from kalshi_shadow.pricing.probability import CHALLENGER, CHAMPION, SECONDS_PER_YEAR, prob_yes
from kalshi_shadow.pricing.snapshots import price_new_quotes, recompute_day, refresh_spot
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.pricing.synthetic import generate, publish_until
from kalshi_shadow.warehouse.ddl import ensure_schema

START = datetime(2026, 7, 1, tzinfo=timezone.utc)
DAY = START.date().isoformat()


# ---- fees ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("price, count, maker, expected", [
    ("0.50", 1, False, "0.02"), ("0.50", 10, False, "0.18"), ("0.50", 100, False, "1.75"),
    ("0.10", 100, False, "0.63"), ("0.50", 10, True, "0.05"), ("0.40", 100, False, "1.68"),
])
def test_reference_fee_examples(price: str, count: int, maker: bool, expected: str) -> None:
    fee_type = "quadratic_with_maker_fees" if maker else "quadratic"
    assert order_fee(Decimal(price), count, fee_type, 1, maker=maker) == Decimal(expected)
    if not maker:
        conn = duckdb.connect()
        conn.execute(FEE_MACRO_SQL)
        sql_fee = conn.execute("SELECT kalshi_taker_fee(?::DECIMAL(18, 4), ?, 'quadratic', 1.0)", [price, count]).fetchall()[0][0]
        assert Decimal(str(sql_fee)) == Decimal(expected)


def test_sql_fee_equals_the_reference_everywhere() -> None:
    conn = duckdb.connect()
    conn.execute(FEE_MACRO_SQL)
    rows = conn.execute("""
        SELECT p / 100 AS price, n, m, kalshi_taker_fee((p / 100)::DECIMAL(18, 4), n, 'quadratic', m) AS fee
        FROM range(1, 100) AS a(p), (VALUES (1), (3), (7), (10), (25), (100), (1000)) AS b(n), (VALUES (1.0), (0.5), (1.25)) AS c(m)
    """).fetchall()
    assert len(rows) == 99 * 7 * 3
    mismatches = [(p, n, m, f) for p, n, m, f in rows if Decimal(str(f)) != order_fee(Decimal(str(p)), n, "quadratic", m)]
    assert mismatches == []


def test_unknown_fee_type_is_not_guessed() -> None:
    assert order_fee(Decimal("0.5"), 10, "flat") is None and order_fee(Decimal("0.5"), 10, None) is None


# ---- probability model -------------------------------------------------------------------------------
def _closed_form_above(k: float, s: float, var: float) -> float:
    return float(norm.sf((np.log(k / s) + 0.5 * var) / np.sqrt(var)))


@pytest.mark.parametrize("model", [CHAMPION, CHALLENGER])
def test_each_strike_type_matches_the_closed_form(model: str) -> None:
    s, vol, tau = 95_000.0, 0.55, 1800.0
    var = vol**2 * ((tau - 60 + 20) if model == CHAMPION else tau) / SECONDS_PER_YEAR
    cases = {
        "greater": (94_999.99, np.nan, _closed_form_above(94_999.995, s, var)),
        "greater_or_equal": (95_000.00, np.nan, _closed_form_above(94_999.995, s, var)),
        "less": (np.nan, 95_500.0, 1 - _closed_form_above(95_499.995, s, var)),
        "less_or_equal": (np.nan, 95_500.0, 1 - _closed_form_above(95_500.005, s, var)),
        "between": (94_500.0, 94_999.99, _closed_form_above(94_499.995, s, var) - _closed_form_above(94_999.995, s, var)),
    }
    st = np.array(list(cases), dtype=object)
    p = prob_yes(st, np.array([c[0] for c in cases.values()]), np.array([c[1] for c in cases.values()]),
                 np.full(5, s), np.full(5, vol), np.full(5, tau), model=model)
    np.testing.assert_allclose(p, [c[2] for c in cases.values()], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model, tau, window_mean", [(CHAMPION, 1800.0, None), (CHALLENGER, 1800.0, None),
                                                     (CHAMPION, 20.0, 94_950.0), (CHAMPION, 3 * 3600.0, None)])
def test_a_full_kxbtc_ladder_sums_to_one(model: str, tau: float, window_mean: float | None) -> None:
    lo, width, n = 90_000, 500, 20
    st = np.array(["less"] + ["between"] * n + ["greater"], dtype=object)
    floors = np.array([np.nan] + [lo + width * i for i in range(n)] + [lo + width * n - 0.01])
    caps = np.array([lo] + [lo + width * i + width - 0.01 for i in range(n)] + [np.nan])
    m = len(st)
    wm = None if window_mean is None else np.full(m, window_mean)
    p = prob_yes(st, floors, caps, np.full(m, 95_000.0), np.full(m, 0.6), np.full(m, tau), model=model, window_mean=wm)
    assert np.all((p >= 0) & (p <= 1))
    assert p.sum() == pytest.approx(1.0, abs=1e-9)


def test_inside_the_window_the_realised_part_counts() -> None:
    """With 59 of 60 seconds realised far above the strike, YES is near certain whatever spot does now."""
    args = dict(strike_type=np.array(["greater_or_equal"], dtype=object), floor=np.array([95_000.0]), cap=np.array([np.nan]),
                spot=np.array([94_900.0]), vol=np.array([0.6]), tau=np.array([1.0]))
    champion = prob_yes(**args, model=CHAMPION, window_mean=np.array([95_200.0]))[0]
    challenger = prob_yes(**args, model=CHALLENGER)[0]
    assert champion > 0.999 and challenger < 0.01


def test_missing_inputs_give_nan_not_a_number() -> None:
    p = prob_yes(np.array(["greater", "between"], dtype=object), np.array([np.nan, 95_000.0]), np.array([np.nan, np.nan]),
                 np.array([95_000.0, 95_000.0]), np.array([0.5, 0.5]), np.array([600.0, 600.0]), model=CHAMPION)
    assert np.isnan(p).all()


# ---- snapshots in the warehouse ----------------------------------------------------------------------
def _warehouse(tmp_path: Path, hours: int = 2) -> duckdb.DuckDBPyConnection:
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)
    generate(conn, START, hours, strikes=6, quote_every=10)
    return conn


def _rows(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute("SELECT * EXCLUDE (created_at, snapshot_seq) FROM kalshi_edge_snapshots ORDER BY snapshot_id").fetchall()


def test_future_spot_ticks_cannot_change_a_snapshot(tmp_path: Path) -> None:
    conn = _warehouse(tmp_path)
    publish_until(conn, START + timedelta(hours=1), load_id=1)
    refresh_spot(conn)
    price_new_quotes(conn, lot=100)
    before = _rows(conn)
    newest_quote = conn.execute("SELECT max(quote_ts) FROM kalshi_edge_snapshots").fetchall()[0][0]
    conn.execute("""INSERT INTO spot_ticks (ts, product_id, sequence, price, load_id)
                    SELECT ?::TIMESTAMPTZ + to_seconds(i + 1), 'BTC-USD', 10 ^ 7 + i, 150000, 99 FROM range(0, 600) AS r(i)""",
                 [newest_quote])
    refresh_spot(conn)
    recompute_day(conn, START.date(), lot=100)
    after = _rows(conn)
    assert len(before) > 1000 and after == before
    assert conn.execute("SELECT count(*) FROM kalshi_edge_snapshots WHERE spot_ts > quote_ts").fetchall()[0][0] == 0


def test_each_quote_is_stored_once_and_numbered_on_from_run_to_run(tmp_path: Path) -> None:
    """Migration 016's layout: one inputs row per quote, one row per (quote, model), joined on snapshot_seq, which
    goes on from the counter across runs (each run its own transaction) and a backfill's rewrite, leaving no orphan."""
    conn = _warehouse(tmp_path)

    def layout() -> tuple:
        return conn.execute("""
            SELECT (SELECT count(*) FROM kalshi_edge_snapshot_quotes), (SELECT count(DISTINCT snapshot_seq) FROM kalshi_edge_snapshot_quotes),
                   (SELECT min(snapshot_seq) FROM kalshi_edge_snapshot_quotes), (SELECT max(snapshot_seq) FROM kalshi_edge_snapshot_quotes),
                   (SELECT count(*) FROM kalshi_edge_snapshot_models), (SELECT count(*) FROM kalshi_edge_snapshots),
                   (SELECT value FROM asset_watermarks WHERE asset = 'kalshi_edge_snapshots.next_seq')""").fetchall()[0]

    for k, until in enumerate((START + timedelta(minutes=30), START + timedelta(hours=1)), start=1):
        publish_until(conn, until, load_id=k)
        refresh_spot(conn)
        price_new_quotes(conn, lot=100)
    n, distinct, lo, hi, model_rows, view_rows, next_seq = layout()
    assert n > 1000 and (distinct, lo, hi, next_seq) == (n, 1, n, n + 1)  # dense from 1, the counter just past it
    assert model_rows == view_rows == n * len(model_names())  # no model row without its quote, none missing
    before = _rows(conn)
    recompute_day(conn, START.date(), lot=100)
    n2, distinct2, lo2, hi2, model_rows2, view_rows2, next_seq2 = layout()
    assert (n2, distinct2, lo2, hi2, next_seq2) == (n, n, n + 1, 2 * n, 2 * n + 1)  # rewritten under new numbers
    assert model_rows2 == view_rows2 == model_rows and _rows(conn) == before


def test_strike_unknown_and_missing_asks_are_reasons_not_numbers(tmp_path: Path) -> None:
    conn = _warehouse(tmp_path, hours=1)
    publish_until(conn, START + timedelta(hours=1), load_id=1)
    refresh_spot(conn)
    price_new_quotes(conn, lot=100)
    early_15m = conn.execute("""SELECT count(*), count(p_model), bool_and(list_contains(reasons, 'strike_unknown'))
                                FROM kalshi_edge_snapshots WHERE series_ticker = 'KXBTC15M' AND floor_strike IS NULL""").fetchall()[0]
    assert early_15m[0] > 0 and early_15m[1] == 0 and early_15m[2]
    later_15m = conn.execute("""SELECT count(p_model) FROM kalshi_edge_snapshots
                                WHERE series_ticker = 'KXBTC15M' AND floor_strike IS NOT NULL AND vol IS NOT NULL""").fetchall()[0][0]
    assert later_15m > 0
    no_ask = conn.execute("""SELECT count(*), count(ev_yes), bool_and(list_contains(reasons, 'no_yes_ask'))
                             FROM kalshi_edge_snapshots WHERE yes_ask IS NULL""").fetchall()[0]
    assert no_ask[0] > 0 and no_ask[1] == 0 and no_ask[2]
    both = conn.execute("SELECT count(DISTINCT model_version) FROM kalshi_edge_snapshots GROUP BY ticker, quote_ts").fetchall()
    assert {n for (n,) in both} == {len(model_names())}  # every registered model on every quote
    tradable = conn.execute("""SELECT count(*) FROM kalshi_edge_snapshots
                               WHERE len(reasons) = 0 AND (ev_yes IS NULL OR ev_no IS NULL OR p_model IS NULL)""").fetchall()[0][0]
    assert tradable == 0
    ev = conn.execute("""SELECT max(abs(ev_yes - (p_model - yes_ask::DOUBLE - fee_yes))) FROM kalshi_edge_snapshots""").fetchall()[0][0]
    assert ev < 1e-12
    # Snapshots that passed every filter carry an edge of at least min_ev.
    passed, min_ev = conn.execute("""SELECT count(*), min(greatest(ev_yes, ev_no)) FROM kalshi_edge_snapshots
                                     WHERE len(reasons) = 0""").fetchall()[0]
    assert passed > 0 and min_ev >= 0.01
    no_edge = conn.execute("""SELECT count(*) FROM kalshi_edge_snapshots WHERE list_contains(reasons, 'no_edge')
                              AND greatest(coalesce(ev_yes, -1), coalesce(ev_no, -1)) >= 0.01""").fetchall()[0][0]
    assert no_edge == 0


def test_backfill_of_a_day_equals_the_incremental_rows(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    conn = _warehouse(tmp_path)
    conn.close()
    wh = Warehouse(database=str(db), raw_dir=str(tmp_path / "raw"))
    for i, minutes in enumerate((25, 50, 70, 95, 130), start=1):  # data arrives in chunks; each chunk is one live run
        with utc(duckdb.connect(str(db))) as conn:
            generate(conn, START, 2, strikes=6, quote_every=10)  # staging tables are temporary: regenerate (seeded)
            publish_until(conn, START + timedelta(minutes=minutes), load_id=i)
        result = dg.materialize([pricing.spot_index, pricing.spot_vol, pricing.kalshi_edge_snapshots], partition_key=DAY, resources={"warehouse": wh},
                                tags={pricing.LIVE_TAG: "live"})
        assert result.success
        meta = result.asset_materializations_for_node("kalshi_edge_snapshots")[0].metadata
        assert meta["mode"].value == "incremental"
    with duckdb.connect(str(db)) as conn:
        live = _rows(conn)
    result = dg.materialize([pricing.kalshi_edge_snapshots], partition_key=DAY, resources={"warehouse": wh},
                            tags={"dagster/backfill": "test"})  # no live tag: a full recompute of the day
    assert result.success
    assert result.asset_materializations_for_node("kalshi_edge_snapshots")[0].metadata["mode"].value == "full recompute"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["probabilities_in_unit_interval"] and checks["no_spot_from_after_the_quote"] and checks["snapshot_id_unique"]
    with duckdb.connect(str(db)) as conn:
        backfilled = _rows(conn)
        quotes = conn.execute("SELECT count(*) FROM kalshi_quotes").fetchall()[0][0]
    assert len(live) == len(model_names()) * quotes > 4000
    assert backfilled == live


def test_todays_utc_day_is_a_partition() -> None:
    """Live runs target the UTC day in progress: it must exist as a partition."""
    assert pricing.daily.has_partition_key(datetime.now(timezone.utc).date().isoformat())


def test_vectorised_ewma_equals_scipy_lfilter() -> None:
    from scipy.signal import lfilter

    from kalshi_shadow.pricing.vol import LAMBDA, ewma

    x = np.random.default_rng(3).gamma(0.5, 1e-7, size=5000)
    expected, _ = lfilter([1.0 - LAMBDA], [1.0, -LAMBDA], x, zi=[LAMBDA * 2.5e-7])
    assert np.allclose(ewma(x, LAMBDA, 2.5e-7), expected, rtol=1e-12, atol=0)


def test_window_mean_is_the_mean_of_spot_in_the_settlement_window_so_far(tmp_path: Path) -> None:
    conn = _warehouse(tmp_path, hours=1)
    publish_until(conn, START + timedelta(hours=1), load_id=1)
    refresh_spot(conn)
    price_new_quotes(conn, lot=100)
    n, with_mean, worst = conn.execute("""
        SELECT count(*), count(window_mean),
               max(abs(window_mean - (SELECT avg(price::DOUBLE) FROM spot_index AS s
                                      WHERE s.ts > e.close_ts - INTERVAL 60 SECOND AND s.ts <= e.quote_ts)))
        FROM kalshi_edge_snapshots AS e WHERE tau_seconds > 0 AND tau_seconds < 60""").fetchall()[0]
    assert n > 0 and with_mean == n and worst < 1e-9
    assert conn.execute("SELECT count(window_mean) FROM kalshi_edge_snapshots WHERE tau_seconds >= 60").fetchall()[0][0] == 0
