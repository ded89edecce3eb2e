"""Issue 11: daily and weekly evaluation reports. A synthetic 8-day history (priced, settled, scored, decided by the
real pipeline steps) renders every section; every number is checked against an independent computation
(scikit-learn, direct SQL, numpy), never the report's own code; empty and pending days say so."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from kalshi_shadow.defs import reports as reports_defs
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.reports import stats
from kalshi_shadow.reports.build import build, metadata_markdown, report_dir, write_html
from kalshi_shadow.reports.cli import main as report_main
from kalshi_shadow.reports.data import Period, collect, duckdb_query
from kalshi_shadow.reports.synthetic_history import START, build_history
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.ddl import ensure_schema

DAY = date(2026, 6, 3)
DAYS = 8


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    db = root / "warehouse.duckdb"
    conn = utc(duckdb.connect(str(db)))
    ensure_schema(conn)
    build_history(conn, days=DAYS, official=True)
    conn.close()
    (root / "raw").mkdir()
    return db


@pytest.fixture
def conn(history: Path):
    c = utc(duckdb.connect(str(history), read_only=True))
    yield c
    c.close()


def _report(conn, period: Period):
    return build(collect(duckdb_query(conn), period))


def _table(report, caption_start: str) -> pl.DataFrame:
    for s in report.sections:
        for b in s.blocks:
            if b.kind == "table" and b.caption.startswith(caption_start):
                return b.table
    raise AssertionError(f"no table {caption_start!r}")


def _ci(text: str) -> tuple[float, float, float]:
    m = re.fullmatch(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", text)
    assert m, text
    return float(m[1]), float(m[2]), float(m[3])


# ---- the full daily report -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_day_of_synthetic_history_renders_every_section_with_charts(conn, tmp_path: Path) -> None:
    report = _report(conn, Period.day(DAY))
    assert [s.status for s in report.sections] == [None] * 6
    path = write_html(report, report_dir(tmp_path, Period.day(DAY)))
    assert path == tmp_path / "reports" / "daily" / "2026-06-03" / "index.html"
    page = path.read_text()
    for name in ("reliability.png", "edge_quality.png", "pnl_bankroll.png", "drift.png"):
        png = (path.parent / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 and f"src='{name}'" in page
    assert "class='status'" not in page  # no section stands empty
    md = metadata_markdown(report)
    assert "Calibration on paired rows" in md and md.count("data:image/png;base64,") == 2


def test_calibration_figures_match_sklearn_on_the_paired_rows(conn) -> None:
    report = _report(conn, Period.day(DAY))
    head = _table(report, "Brier score, log loss")
    for model in head["model"]:
        rows = conn.execute("""SELECT y, p_model, p_mid FROM kalshi_edge_snapshot_scores
                               WHERE quote_date = ? AND model_version = ? AND excluded_reason IS NULL""", [DAY, model]).fetchnumpy()
        y, pm, pk = rows["y"], rows["p_model"], rows["p_mid"]
        r = head.filter(pl.col("model") == model).row(0, named=True)
        assert r["paired rows"] == len(y) > 1000
        assert r["Brier model"] == pytest.approx(brier_score_loss(y, pm))
        assert r["Brier mid"] == pytest.approx(brier_score_loss(y, pk))
        assert r["log loss model"] == pytest.approx(log_loss(y, np.clip(pm, 1e-6, 1 - 1e-6), labels=[0, 1]))
        assert r["log loss mid"] == pytest.approx(log_loss(y, np.clip(pk, 1e-6, 1 - 1e-6), labels=[0, 1]))
        bss, lo, hi = _ci(r["BSS vs mid [95% CI, events]"])
        assert bss == pytest.approx(1 - brier_score_loss(y, pm) / brier_score_loss(y, pk), abs=1e-4) and lo < bss < hi
    # Per series and horizon: the row counts add up to the paired rows.
    by = _table(report, "Per series and time to close")
    assert by["paired rows"].sum() == head["paired rows"].sum()


def test_reliability_and_decomposition_match_numpy(conn) -> None:
    report = _report(conn, Period.day(DAY))
    rel, dec = _table(report, "Reliability table"), _table(report, "Brier decomposition")
    rows = conn.execute("""SELECT y, p_model FROM kalshi_edge_snapshot_scores
                           WHERE quote_date = ? AND model_version = 'avg60-v1' AND excluded_reason IS NULL""", [DAY]).fetchnumpy()
    y, p = rows["y"], rows["p_model"]
    b = np.minimum((p * 10).astype(int), 9)
    mine = rel.filter(pl.col("forecaster") == "avg60-v1")
    for k, r in zip(np.unique(b), mine.iter_rows(named=True)):
        sel = b == k
        assert r["rows"] == sel.sum() and r["observed"] == pytest.approx(y[sel].mean()) and r["mean forecast"] == pytest.approx(p[sel].mean())
        assert r["band lo"] <= r["observed"] <= r["band hi"]
    d = dec.filter(pl.col("forecaster") == "avg60-v1").row(0, named=True)
    base = y.mean()
    ks = np.unique(b)
    n = np.array([(b == k).sum() for k in ks])
    rel_ = sum((b == k).sum() * (p[b == k].mean() - y[b == k].mean()) ** 2 for k in ks) / len(y)
    res_ = sum((b == k).sum() * (y[b == k].mean() - base) ** 2 for k in ks) / len(y)
    assert n.sum() == len(y)
    assert d["Brier"] == pytest.approx(brier_score_loss(y, p)) and d["reliability (−)"] == pytest.approx(rel_)
    assert d["resolution (+)"] == pytest.approx(res_) and d["uncertainty"] == pytest.approx(base * (1 - base))
    assert d["Brier"] == pytest.approx(d["reliability (−)"] - d["resolution (+)"] + d["uncertainty"] + d["within-bin residual"])


def test_decomposition_is_exact_for_forecasts_on_bin_values_sklearn_brier() -> None:
    rng = np.random.default_rng(1)
    p = rng.choice([0.05, 0.35, 0.65, 0.95], size=4000)
    y = (rng.random(4000) < p).astype(float)
    b = np.minimum((p * 10).astype(int), 9)
    n, sp, sy = (np.bincount(b, weights=w, minlength=10) for w in (np.ones_like(p), p, y))
    d = stats.decompose(brier_score_loss(y, p), n, sp, sy)
    assert d.residual == pytest.approx(0, abs=1e-12)
    assert d.reliability - d.resolution + d.uncertainty == pytest.approx(brier_score_loss(y, p))


def test_edge_quality_buckets_match_direct_sql(conn) -> None:
    report = _report(conn, Period.day(DAY))
    edge = _table(report, "Per predicted-EV bucket").filter(pl.col("model") == "avg60-v1")
    direct = conn.execute("""
        WITH r AS (SELECT ev_yes AS ev, pnl_yes AS pnl FROM kalshi_edge_snapshot_scores WHERE quote_date = $d AND model_version = 'avg60-v1'
                     AND outcome <> 'void' AND ev_yes IS NOT NULL AND pnl_yes IS NOT NULL
                   UNION ALL SELECT ev_no, pnl_no FROM kalshi_edge_snapshot_scores WHERE quote_date = $d AND model_version = 'avg60-v1'
                     AND outcome <> 'void' AND ev_no IS NOT NULL AND pnl_no IS NOT NULL)
        SELECT count(*), avg(ev), avg(pnl) FROM r WHERE ev > 0.05 AND ev <= 0.10""", {"d": DAY}).fetchall()[0]
    r = edge.filter(pl.col("predicted EV bucket") == "(+0.05, +0.10]").row(0, named=True)
    assert r["rows"] == direct[0] and r["mean predicted EV"] == pytest.approx(direct[1])
    assert _ci(r["realised PnL [95% CI, events]"])[0] == pytest.approx(direct[2], abs=1e-4)
    assert edge["rows"].sum() == conn.execute("""SELECT count(ev_yes) FILTER (WHERE pnl_yes IS NOT NULL) + count(ev_no) FILTER (WHERE pnl_no IS NOT NULL)
        FROM kalshi_edge_snapshot_scores WHERE quote_date = ? AND model_version = 'avg60-v1' AND outcome <> 'void'""", [DAY]).fetchall()[0][0]


def test_rule_set_pnl_counts_and_drawdown_match_direct_sql(conn) -> None:
    report = _report(conn, Period.day(DAY))
    t = _table(report, "Takes decided in the period")
    for r in t.iter_rows(named=True):
        takes, settled, wins, pnl, ev, contracts = conn.execute("""
            SELECT count(*), count(realised_pnl), count(*) FILTER (WHERE realised_pnl > 0), sum(realised_pnl),
                   sum(ev_per_contract * contracts) FILTER (WHERE realised_pnl IS NOT NULL), sum(contracts) FILTER (WHERE realised_pnl IS NOT NULL)
            FROM kalshi_would_trades WHERE action = 'take' AND rule_set_version = ? AND decision_date = ?""", [r["rule set"], DAY]).fetchall()[0]
        assert (r["takes"], r["settled"]) == (takes, settled) and takes > 0
        assert r["hit rate %"] == pytest.approx(round(100 * wins / settled, 1))
        assert r["realised PnL $"] == pytest.approx(pnl, abs=0.01) and r["predicted EV $"] == pytest.approx(ev, abs=0.01)
        assert _ci(r["realised / contract [95% CI, events]"])[0] == pytest.approx(pnl / contracts, abs=1e-4)
        # Equity and drawdown from the bankroll view, the running peak taken in numpy over the whole history.
        eq = conn.execute("SELECT ts, equity_at_cost FROM kalshi_bankroll WHERE rule_set_version = ? ORDER BY step", [r["rule set"]]).fetchnumpy()
        end = np.datetime64(datetime(2026, 6, 4), "us")
        ts = eq["ts"].astype("datetime64[us]")
        upto = ts < end
        dd = eq["equity_at_cost"][upto] - np.maximum.accumulate(eq["equity_at_cost"][upto])
        inside = ts[upto] >= np.datetime64(datetime(2026, 6, 3), "us")
        assert r["max drawdown $"] == pytest.approx(dd[inside].min(), abs=0.01)
        assert r["equity at end $"] == pytest.approx(eq["equity_at_cost"][upto][-1], abs=0.01)


def test_coverage_counts_match_direct_sql(conn) -> None:
    report = _report(conn, Period.day(DAY))
    feeds = _table(report, "Hours of data")
    quotes = conn.execute("SELECT count(*) FROM kalshi_quotes WHERE ts >= ? AND ts < ?",
                          [datetime(2026, 6, 3, tzinfo=timezone.utc), datetime(2026, 6, 4, tzinfo=timezone.utc)]).fetchall()[0][0]
    assert feeds.filter(pl.col("feed") == "quotes")["rows"][0] == quotes
    assert feeds["hours of data"].to_list() == [24.0, 24.0]
    cs = _table(report, "Per series and model")
    seen = dict(conn.execute("""SELECT series_ticker, count(DISTINCT ticker) FROM kalshi_quotes WHERE ts >= '2026-06-03' AND ts < '2026-06-04'
                                GROUP BY 1""").fetchall())
    for r in cs.iter_rows(named=True):
        assert r["contracts_seen"] == seen[r["series"]] == r["settled"] + r["pending (closed)"] + r["pending (open)"]
        n, priced = conn.execute("""SELECT count(*), count(p_model) FROM kalshi_edge_snapshots WHERE quote_date = ? AND series_ticker = ?
                                    AND model_version = ?""", [DAY, r["series"], r["model"]]).fetchall()[0]
        assert r["snapshots"] == n and r["% priceable"] == pytest.approx(round(100 * priced / n, 1))


# ---- statistics against hand-built cases ---------------------------------------------------------------------------
def test_the_event_clustered_interval_is_wider_than_the_naive_one_on_correlated_rows() -> None:
    """Ten events of 50 rows each; every row of an event has the event's PnL (+1 or -1): 500 rows but ten draws."""
    per_event = np.array([1, -1, 1, 1, -1, 1, -1, 1, 1, -1], float)
    rows = np.repeat(per_event, 50)
    naive = stats.naive_mean(rows)
    clustered = stats.clustered_mean(per_event * 50, np.full(10, 50))
    assert clustered.estimate == pytest.approx(naive.estimate) == pytest.approx(0.2)
    assert (clustered.hi - clustered.lo) > 5 * (naive.hi - naive.lo)
    # By hand: cluster residuals (+-1 - 0.2) * 50; se = sqrt(10/9 * sum r^2) / 500.
    se = np.sqrt(10 / 9 * np.sum(((per_event - 0.2) * 50) ** 2)) / 500
    assert clustered.hi - clustered.estimate == pytest.approx(stats.Z * se)
    # Independent rows (clusters of one): the clustered interval is the naive one up to the G/(G-1) factor.
    x = np.random.default_rng(3).normal(size=400)
    one = stats.clustered_mean(x, np.ones(400))
    assert (one.hi - one.lo) / (stats.naive_mean(x).hi - stats.naive_mean(x).lo) == pytest.approx(1.0, rel=0.01)


def test_the_skill_bootstrap_resamples_events_not_rows() -> None:
    """Two events: skill is strongly positive on one and negative on the other, so the event bootstrap is wide."""
    sum_model, sum_ref = np.array([10.0, 40.0]), np.array([30.0, 30.0])
    s = stats.skill_score(sum_model, sum_ref)
    assert s.estimate == pytest.approx(1 - 50 / 60) and s.lo < 0 < s.hi


def test_settlement_index_section_matches_numpy_on_the_index_grid(conn) -> None:
    """Each source's cent-rounded 60-s mean before close, its result and error, recomputed from `spot_index` rows."""
    report = _report(conn, Period.day(DAY))
    table = _table(report, "Settled contracts with all 60 seconds")
    t0 = datetime(2026, 6, 3, tzinfo=timezone.utc)
    contracts = conn.execute("""SELECT ticker, strike_type, floor_strike, cap_strike, close_ts, outcome, expiration_value::DOUBLE
                                FROM kalshi_contracts WHERE close_ts >= ? AND close_ts < ? + INTERVAL 1 DAY
                                AND outcome IN ('yes', 'no')""", [t0, t0]).fetchall()
    grid = conn.execute("""SELECT epoch(s.ts)::BIGINT, o.value::DOUBLE, proxy::DOUBLE, coinbase::DOUBLE, kraken::DOUBLE, bitstamp::DOUBLE
                           FROM spot_index AS s LEFT JOIN cfb_index_values AS o ON o.ts = s.ts  -- the official value by its own time
                           WHERE s.ts > ? - INTERVAL 1 MINUTE AND s.ts < ? + INTERVAL 1 DAY ORDER BY s.ts""", [t0, t0]).fetchnumpy()
    secs, *cols = grid.values()
    by_second = {int(x): i for i, x in enumerate(secs)}
    expected: dict[str, list[tuple[bool, float]]] = {s: [] for s in ("official", "proxy", "coinbase", "kraken", "bitstamp")}
    for _, kind, f, k, close, outcome, official in contracts:
        end = int(close.timestamp())
        rows = [by_second.get(x) for x in range(end - 59, end + 1)]
        if None in rows:
            continue
        values = [np.array([c[i] for i in rows], dtype=float) for c in cols]
        if any(np.isnan(v).any() for v in values):
            continue
        for source, v in zip(expected, values):
            m = float(np.floor(v.mean() * 100 + 0.5) / 100)  # half away from zero, as DuckDB's and Kalshi's round
            yes = {"greater": m > (f or 0), "greater_or_equal": m >= (f or 0), "less": m < (k or 0),
                   "less_or_equal": m <= (k or 0), "between": f is not None and k is not None and f <= m <= k}[kind]
            expected[source].append(((("yes" if yes else "no") == outcome), abs(m - official)))
    assert len(expected["proxy"]) > 50
    assert [r["60-s mean of"] for r in table.iter_rows(named=True)] == list(expected)
    for r in table.iter_rows(named=True):
        got = expected[r["60-s mean of"]]
        assert r["contracts"] == len(got)
        assert r["gave the exchange's result"] == sum(ok for ok, _ in got)
        # A mean that falls on a half cent may round either way in floating point: a cent on a few of 200+ contracts.
        assert r["mean |error| $"] == pytest.approx(np.mean([e for _, e in got]), abs=1e-3)
    # The proxy against the official index, that day, from the grid's own columns.
    basis = _table(report, "The proxy against the official index").row(0, named=True)
    official, proxy, n = conn.execute("""SELECT official::DOUBLE, proxy::DOUBLE, n_venues FROM spot_index
                                         WHERE ts >= ? AND ts < ? + INTERVAL 1 DAY AND official IS NOT NULL""", [t0, t0]).fetchnumpy().values()
    both = n >= 2
    assert basis["seconds recorded"] == len(official) > 80_000 and basis["seconds paired"] == both.sum()
    assert basis["mean basis bp"] == pytest.approx(round(float(np.mean((proxy[both] / official[both] - 1) * 1e4)), 2), abs=0.006)
    # The synthetic history settles on Coinbase's own trades: Coinbase beats Kraken, whose basis is the widest.
    by = {r["60-s mean of"]: r for r in table.iter_rows(named=True)}
    assert by["coinbase"]["mean |error| $"] < by["kraken"]["mean |error| $"]


# ---- weekly ----------------------------------------------------------------------------------------------------
def test_the_weekly_report_aggregates_its_seven_days(conn, tmp_path: Path) -> None:
    week = Period.week("2026-W23")
    assert week.start == START.date() and week.days == 7 and week.label == "2026-W23"
    report = _report(conn, week)
    assert [s.status for s in report.sections] == [None] * 7
    head = _table(report, "Brier score, log loss")
    days = _table(report, "Per day: calibration")
    for model in head["model"]:
        rows = conn.execute("""SELECT y, p_model FROM kalshi_edge_snapshot_scores WHERE quote_date >= '2026-06-01' AND quote_date < '2026-06-08'
                               AND model_version = ? AND excluded_reason IS NULL""", [model]).fetchnumpy()
        y, pm = rows["y"], rows["p_model"]
        r = head.filter(pl.col("model") == model).row(0, named=True)
        assert r["paired rows"] == len(y) and r["Brier model"] == pytest.approx(brier_score_loss(y, pm))
        d = days.filter(pl.col("model") == model)
        assert d.height == 7 and d["paired rows"].sum() == len(y)
    takes = _table(report, "Takes decided in the period")
    assert takes["takes"].sum() == conn.execute("""SELECT count(*) FROM kalshi_would_trades WHERE action = 'take'
                                                   AND decision_date >= '2026-06-01' AND decision_date < '2026-06-08'""").fetchall()[0][0]
    path = write_html(report, report_dir(tmp_path, week))
    assert path.parent.name == "2026-W23" and (path.parent / "trend_daily_brier.png").exists()


# ---- empty and partial days --------------------------------------------------------------------------------------
def test_an_empty_day_says_no_data_and_shows_no_numbers(conn, tmp_path: Path) -> None:
    report = _report(conn, Period.day(date(2026, 7, 1)))
    assert all(s.status and s.status.startswith("no data") for s in report.sections)
    assert all(not s.blocks for s in report.sections) and not report.headline
    page = write_html(report, tmp_path).read_text()
    assert "no data" in page and "<table" not in page and "<img" not in page


def test_a_day_before_settlement_says_pending_settlement(tmp_path: Path) -> None:
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)
    build_history(conn, days=1, pending_hours=24)
    report = _report(conn, Period.day(START.date()))
    status = {s.title.split(" ")[0]: s.status for s in report.sections}
    assert status["1."] is None and status["4."] is None  # coverage and drift need no outcome
    assert status["2."].startswith("pending settlement") and status["3."].startswith("pending settlement")
    t = _table(report, "Takes decided in the period")
    assert (t["hit rate %"] == "pending settlement").all() and "realised PnL $" not in t.columns


# ---- Dagster and the CLI -------------------------------------------------------------------------------------------
def test_the_assets_materialize_a_partition_with_markdown_metadata(history: Path, tmp_path: Path) -> None:
    wh = Warehouse(database=str(history), raw_dir=str(history.parent / "raw"))
    res = dg.materialize([reports_defs.kalshi_daily_report], resources={"warehouse": wh}, partition_key="2026-06-03")
    assert res.success
    md = res.asset_materializations_for_node("kalshi_daily_report")[0].metadata
    assert "data:image/png;base64," in md["report"].value
    assert Path(md["path"].value) == history.parent / "reports" / "daily" / "2026-06-03" / "index.html"
    assert reports_defs.weekly.get_partition_keys()[0] == "2026-01-05"  # Mondays
    res = dg.materialize([reports_defs.kalshi_weekly_report], resources={"warehouse": wh}, partition_key="2026-06-01")
    assert res.success and (history.parent / "reports" / "weekly" / "2026-W23" / "index.html").exists()


def test_the_schedules_ask_for_yesterday_and_last_week() -> None:
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 6, 9, 2, tzinfo=timezone.utc))
    assert reports_defs.daily_report_schedule(ctx).partition_key == "2026-06-08"
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 6, 8, 3, tzinfo=timezone.utc))
    assert reports_defs.weekly_report_schedule(ctx).partition_key == "2026-06-01"


def test_the_cli_prints_the_headline_and_the_path(history: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DB_PATH", str(history))
    assert report_main(["--date", "2026-06-04"]) == 0
    out = capsys.readouterr().out
    assert "Calibration on paired rows" in out and "avg60-v1" in out
    assert out.strip().endswith(str(tmp_path / "reports" / "daily" / "2026-06-04" / "index.html"))
    assert report_main(["--week", "2026-W23"]) == 0 and "2026-W23" in capsys.readouterr().out
    assert report_main(["--week", "nonsense"]) == 2


def test_a_model_beats_the_mid_only_where_its_interval_is_above_zero() -> None:
    from kalshi_shadow.reports.build import verdict
    from kalshi_shadow.reports.stats import Interval

    assert verdict(Interval(0.05, 0.01, 0.09)) == "beats the mid"
    assert verdict(Interval(0.05, -0.01, 0.09)) == "no detectable difference"
    assert verdict(Interval(-0.05, -0.09, -0.01)) == "worse than the mid"
    assert verdict(Interval(0.05, float("nan"), float("nan"))) == "too few events"
