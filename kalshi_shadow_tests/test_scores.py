"""Issue 4: outcomes read from the simulator for the stored tickers, amendments re-scored (scores are a view of the
latest outcome), and scores that equal scikit-learn's metrics; all through real Dagster materializations on a DuckDB file."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from collectors.quotes import QuotePoller
from kalshi_shadow.defs import ingest, settlements
from kalshi_shadow.defs.resources import KalshiAPI, Warehouse
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.pricing.fees import order_fee
from kalshi_shadow.pricing.snapshots import insert_wide_snapshots
from kalshi_shadow.scoring.scores import EPS
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import utc


def _setup(manual_sim: SimHandle, tmp_path: Path) -> tuple[Warehouse, KalshiAPI]:
    """Poll the simulator once and load the result: contracts for every open market."""
    poller = QuotePoller(KalshiClient(manual_sim.kalshi_base_url, reads_per_second=500), ["KXBTC15M", "KXBTCD", "KXBTC"], tmp_path)
    manual_sim.advance(40)  # the 15M strike is published 30 s after open
    poller.poll_once()
    poller._flush_if_due(force=True)
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    assert dg.materialize([*ingest.raw_assets, ingest.kalshi_contracts], resources={"warehouse": wh}).success
    return wh, KalshiAPI(base_url=manual_sim.kalshi_base_url, reads_per_second=500)


def _settle(wh: Warehouse, api: KalshiAPI, **config) -> dg.ExecuteInJobResult:
    result = dg.materialize([settlements.kalshi_settlements], resources={"warehouse": wh, "kalshi": api},
                            run_config={"ops": {"kalshi_settlements": {"config": config}}} if config else None)
    assert result.success
    return result


def _snapshot(conn: duckdb.DuckDBPyConnection, ticker: str, day: str, *, p_model: float | None, yes_ask: str, no_ask: str,
              p_mid: float = 0.41, lot: int = 100, model: str = "avg60-v1", n: int = 0) -> None:
    fee_yes = float(order_fee(Decimal(yes_ask), lot, "quadratic")) / lot
    fee_no = float(order_fee(Decimal(no_ask), lot, "quadratic")) / lot
    ev_yes = None if p_model is None else p_model - float(yes_ask) - fee_yes
    insert_wide_snapshots(conn, """
        INSERT INTO kalshi_edge_snapshots (quote_key, quote_date, ticker, series_ticker, event_ticker, model_version, quote_ts,
            created_at, yes_ask, no_ask, lot_size, fee_yes, fee_no, p_model, p_mid, reasons, rules_version, tau_seconds)
        SELECT md5(ticker || ?)::UUID, ?::DATE, ticker, series_ticker, event_ticker, ?, ?::DATE + to_seconds(?), now(), ?, ?, ?, ?, ?, ?, ?, [], 'test', 600
        FROM kalshi_contracts WHERE ticker = ?""",
                 [n, day, model, day, n, yes_ask, no_ask, lot, fee_yes, fee_no, p_model, p_mid, ticker])
    if ev_yes is not None:
        assert conn.execute("SELECT ev_yes FROM kalshi_edge_snapshots WHERE ticker = ? AND quote_ts = ?::DATE + to_seconds(?)",
                            [ticker, day, n]).fetchall()[0][0] == pytest.approx(ev_yes)


def _score(wh: Warehouse, day: str, **tags) -> dg.ExecuteInJobResult:
    result = dg.materialize([settlements.kalshi_edge_snapshot_scores], partition_key=day, resources={"warehouse": wh}, tags=tags or None)
    assert result.success
    return result


def test_outcomes_come_from_the_exchange_for_the_stored_ticker(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api = _setup(manual_sim, tmp_path)
    # The simulator's July clock is behind the wall clock, so every contract looks closed to us: the exchange's
    # answer (still active, no result) must win, and no outcome may be invented.
    _settle(wh, api)
    with utc(duckdb.connect(wh.database)) as conn:
        assert conn.execute("SELECT count(*), count(outcome) FROM kalshi_contracts").fetchall()[0][1] == 0
        assert conn.execute("SELECT DISTINCT status FROM kalshi_settlement_observations").fetchall() == [("active",)]
    manual_sim.advance(3600 + 120)  # past the hourly close and its 60 s settlement timer
    _settle(wh, api)
    with utc(duckdb.connect(wh.database)) as conn:
        rows = conn.execute("""SELECT ticker, outcome, settlement_value, expiration_value, settlement_status FROM kalshi_contracts
                               WHERE close_ts <= ? ORDER BY ticker""", [datetime.fromtimestamp(manual_sim.clock.now()).astimezone()]).fetchall()
    assert len(rows) > 40 and {r[0].split("-")[0] for r in rows} == {"KXBTC15M", "KXBTCD", "KXBTC"}
    for ticker, outcome, value, expiration, status in rows:
        market = manual_sim.exchange.market(ticker)
        assert outcome == manual_sim.exchange.natural_result(market)
        assert value == (Decimal(1) if outcome == "yes" else Decimal(0))
        assert expiration == manual_sim.exchange.expiration_value(market)
        assert status in ("determined", "finalized")
    # A full KXBTC ladder settles exactly one market YES.
    event = next(r[0] for r in rows if r[0].startswith("KXBTC-")).rsplit("-", 1)[0]
    assert sum(1 for r in rows if r[0].startswith(event + "-") and r[1] == "yes") == 1


def test_amended_outcome_updates_history_and_scores(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api = _setup(manual_sim, tmp_path)
    ticker = next(m.ticker for m in manual_sim.exchange.markets() if m.series == "KXBTCD" and m.close_ts > manual_sim.clock.now())
    market = manual_sim.exchange.market(ticker)
    day = datetime.fromtimestamp(market.open_ts).astimezone().date().isoformat()
    with utc(duckdb.connect(wh.database)) as conn:
        _snapshot(conn, ticker, day, p_model=0.55, yes_ask="0.40", no_ask="0.62")
    manual_sim.advance(market.close_ts - manual_sim.clock.now() + 61)
    manual_sim.set_outcome(ticker, "yes", status="determined")
    result = _settle(wh, api)
    assert day in result.asset_materializations_for_node("kalshi_settlements")[0].metadata["quote_dates"].value
    _score(wh, day)
    with utc(duckdb.connect(wh.database)) as conn:
        pnl_yes, y = conn.execute("SELECT pnl_yes, y FROM kalshi_edge_snapshot_scores WHERE ticker = ?", [ticker]).fetchall()[0]
    assert y == 1.0
    assert pnl_yes == pytest.approx(0.60 - 1.68 / 100, abs=1e-12)  # 100 @ 0.40 -> fee $1.68 per order
    manual_sim.set_outcome(ticker, "no", status="amended")
    _settle(wh, api)
    second = _score(wh, day)
    figures = second.asset_materializations_for_node("kalshi_edge_snapshot_scores")[0].metadata
    assert (figures["rows"].value, figures["settled_contracts"].value, figures["out_of_range"].value) == (1, 1, 0)
    with utc(duckdb.connect(wh.database)) as conn:
        outcome, status = conn.execute("SELECT outcome, settlement_status FROM kalshi_contracts WHERE ticker = ?", [ticker]).fetchall()[0]
        history = conn.execute("SELECT status, result FROM kalshi_settlement_observations WHERE ticker = ? ORDER BY observed_at",
                               [ticker]).fetchall()
        score = conn.execute("SELECT outcome, y, pnl_yes, pnl_no FROM kalshi_edge_snapshot_scores WHERE ticker = ?", [ticker]).fetchall()
    assert (outcome, status) == ("no", "amended")
    assert history == [("determined", "yes"), ("amended", "no")]
    assert score == [("no", 0.0, pytest.approx(-0.40 - 0.0168), pytest.approx(1 - 0.62 - float(order_fee(Decimal("0.62"), 100, "quadratic")) / 100))]
    # Amended is not final: it is read again on the next run; finalized stops the re-reads.
    manual_sim.set_outcome(ticker, "no", status="finalized")
    _settle(wh, api)
    with utc(duckdb.connect(wh.database)) as conn:
        assert conn.execute("SELECT settlement_status FROM kalshi_contracts WHERE ticker = ?", [ticker]).fetchall()[0][0] == "finalized"


def test_void_and_scalar_outcomes(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api = _setup(manual_sim, tmp_path)
    open_ladder = [m for m in manual_sim.exchange.markets() if m.series == "KXBTC" and m.close_ts > manual_sim.clock.now()]
    void, scalar = open_ladder[0].ticker, open_ladder[1].ticker
    day = datetime.fromtimestamp(open_ladder[0].open_ts).astimezone().date().isoformat()
    with utc(duckdb.connect(wh.database)) as conn:
        _snapshot(conn, void, day, p_model=0.3, yes_ask="0.30", no_ask="0.72")
        _snapshot(conn, scalar, day, p_model=0.3, yes_ask="0.30", no_ask="0.72", p_mid=0.31)
    manual_sim.advance(open_ladder[0].close_ts - manual_sim.clock.now() + 61)
    manual_sim.set_outcome(void, "void")
    manual_sim.set_outcome(scalar, "scalar", settlement_value="0.3700")
    _settle(wh, api)
    _score(wh, day)
    with utc(duckdb.connect(wh.database)) as conn:
        v = conn.execute("SELECT outcome, y, brier_model, pnl_yes, excluded_reason FROM kalshi_edge_snapshot_scores WHERE ticker = ?", [void]).fetchall()
        s = conn.execute("SELECT outcome, y, brier_model, logloss_model, pnl_yes FROM kalshi_edge_snapshot_scores WHERE ticker = ?", [scalar]).fetchall()
        contract = conn.execute("SELECT outcome, settlement_value FROM kalshi_contracts WHERE ticker = ?", [scalar]).fetchall()[0]
    assert v == [("void", None, None, None, "void")]
    assert contract == ("scalar", Decimal("0.3700"))
    (outcome, y, brier, ll, pnl_yes), = s
    assert (outcome, y) == ("scalar", 0.37)
    assert brier == pytest.approx((0.3 - 0.37) ** 2)
    assert ll == pytest.approx(-(0.37 * np.log(0.3) + 0.63 * np.log(0.7)))
    assert pnl_yes == pytest.approx(0.37 - 0.30 - float(order_fee(Decimal("0.30"), 100, "quadratic")) / 100)


def test_brier_and_log_loss_equal_scikit_learn(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api = _setup(manual_sim, tmp_path)
    ladder = [m for m in manual_sim.exchange.markets() if m.series == "KXBTCD" and m.close_ts > manual_sim.clock.now()]
    day = datetime.fromtimestamp(ladder[0].open_ts).astimezone().date().isoformat()
    rng = np.random.default_rng(3)
    with utc(duckdb.connect(wh.database)) as conn:
        for i, m in enumerate(ladder):
            for k in range(4):
                p = [0.0, 1.0, 1e-9][k % 3] if i % 7 == 0 else float(rng.uniform(0.01, 0.99))  # include clip-worthy p
                _snapshot(conn, m.ticker, day, p_model=p, p_mid=float(rng.uniform(0.05, 0.95)), yes_ask="0.50", no_ask="0.52", n=k)
    manual_sim.advance(ladder[0].close_ts - manual_sim.clock.now() + 61)
    _settle(wh, api)
    _score(wh, day, **{"dagster/backfill": "t"})
    with utc(duckdb.connect(wh.database)) as conn:
        y, pm, pk, bm, lm, bk, lk = map(np.array, zip(*conn.execute(
            "SELECT y, p_model, p_mid, brier_model, logloss_model, brier_mid, logloss_mid FROM kalshi_edge_snapshot_scores").fetchall()))
    assert len(y) == 4 * len(ladder) and set(y) == {0.0, 1.0}
    clip = lambda p: np.clip(p, EPS, 1 - EPS)  # noqa: E731
    assert bm.mean() == pytest.approx(brier_score_loss(y, pm), rel=1e-12)
    assert bk.mean() == pytest.approx(brier_score_loss(y, pk), rel=1e-12)
    assert lm.mean() == pytest.approx(log_loss(y, clip(pm), labels=[0, 1]), rel=1e-9)
    assert lk.mean() == pytest.approx(log_loss(y, clip(pk), labels=[0, 1]), rel=1e-9)
    with utc(duckdb.connect(wh.database)) as conn:
        summary = conn.execute("SELECT sum(n_paired), avg(brier_model) FROM kalshi_score_summary WHERE series_ticker = 'KXBTCD'").fetchall()[0]
    assert summary[0] == len(y) and summary[1] == pytest.approx(bm.mean())  # one horizon bucket here
