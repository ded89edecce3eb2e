"""Issue 18: models as plugins. A toy model from outside the package is priced, scored, reported and decided on;
the market-anchored model is the mid when the index has not moved; the recalibrated model is walk-forward: outcomes
that become known later change none of its earlier probabilities, and a backfill reproduces its rows."""

from __future__ import annotations

import shutil
import textwrap
from datetime import timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest

from kalshi_shadow.config import ConfigError
from kalshi_shadow.defs import pricing
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.models import ModelInputs, model_names
from kalshi_shadow.models.anchored import MarketAnchored
from kalshi_shadow.models.recalibrated import TRAIN_SQL, Recalibrated, fit_platt, window_days
from kalshi_shadow.pricing.probability import CHAMPION, prob_yes
from kalshi_shadow.pricing.snapshots import recompute_day
from kalshi_shadow.reports.build import build
from kalshi_shadow.reports.data import Period, collect, duckdb_query
from kalshi_shadow.reports.synthetic_history import START, build_history
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.ddl import ensure_schema

RULES = Path(__file__).parents[1] / "kalshi_shadow" / "decisions" / "rules.toml"
SNAPSHOT_COLUMNS = "* EXCLUDE (created_at, snapshot_seq)"  # both say when and where a row was stored


def _inputs(n: int, rng: np.random.Generator, **over) -> ModelInputs:
    spot = rng.uniform(90_000, 100_000, n)
    kinds = rng.choice(["greater", "greater_or_equal", "less", "between"], n).astype(object)
    floor = spot + rng.normal(0, 400, n)
    x = dict(strike_type=kinds, floor=floor, cap=floor + 500, spot=spot, vol=rng.uniform(0.2, 1.0, n),
             tau=rng.uniform(5, 7200, n), window_mean=np.full(n, np.nan), yes_bid=np.full(n, np.nan),
             yes_ask=np.full(n, np.nan), yes_bid_size=np.full(n, 10.0), yes_ask_size=np.full(n, 10.0),
             p_mid=rng.uniform(0.02, 0.98, n), book_age=rng.uniform(0, 60, n), index_move=np.zeros(n),
             seen_ts=np.full(n, 1.8e9), series=np.full(n, "KXBTCD", dtype=object))
    x.update(over)
    return ModelInputs(**x)


def test_the_anchored_model_is_the_mid_until_the_index_moves() -> None:
    rng = np.random.default_rng(3)
    still = _inputs(5000, rng)
    p = MarketAnchored().prob_yes(still)
    assert np.max(np.abs(p - still.p_mid)) < 1e-9
    # The index 20 bp up since the book changed: every `greater` contract is worth more than its stale mid, every
    # `less` one less, and by the champion law's own move in logit space.
    up = _inputs(5000, np.random.default_rng(3), index_move=np.full(5000, 0.002))
    q = MarketAnchored().prob_yes(up)
    greater, less = up.strike_type == "greater", up.strike_type == "less"
    assert (q[greater] >= up.p_mid[greater] - 1e-12).all() and (q[greater] > up.p_mid[greater] + 1e-4).any()
    assert (q[less] <= up.p_mid[less] + 1e-12).all()
    law = lambda s: prob_yes(up.strike_type, up.floor, up.cap, s, up.vol, up.tau, model=CHAMPION)  # noqa: E731
    logit = lambda v: np.log(v) - np.log1p(-v)  # noqa: E731
    now, then = np.clip(law(up.spot), 1e-9, 1 - 1e-9), np.clip(law(up.spot / np.exp(0.002)), 1e-9, 1 - 1e-9)
    expected = 1 / (1 + np.exp(-(logit(up.p_mid) + logit(now) - logit(then))))
    assert np.max(np.abs(q - expected)) < 1e-12
    # No mid (one-sided) or no index then: not priced, never a guess.
    gaps = _inputs(2, rng, p_mid=np.array([np.nan, 0.4]), index_move=np.array([0.0, np.nan]))
    assert np.isnan(MarketAnchored().prob_yes(gaps)).all()


def test_platt_fit_recovers_a_known_miscalibration() -> None:
    x = np.linspace(-3, 3, 121)
    n = np.full_like(x, 1000.0)
    k = n / (1 + np.exp(-(0.3 + 0.7 * x)))
    a, b = fit_platt(x, n, k)
    assert a == pytest.approx(0.3, abs=1e-4) and b == pytest.approx(0.7, abs=1e-4)


def test_a_setting_that_names_no_model_is_refused(monkeypatch, tmp_path: Path) -> None:
    from kalshi_shadow.models.registry import registered_models

    (tmp_path / "notamodel.py").write_text("thing = 42\nclass Bad:\n    name = 'Bad Name'\n    def prob_yes(self, x): return x.p_mid\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for value, words in (("notamodel:thing", "is not a model"), ("notamodel:Bad", "must be lower case"),
                         ("nosuchmodule:x", "cannot load"), ("avg60", "module:attribute"),
                         ("kalshi_shadow.models.lognormal:Avg60", "registered twice")):
        monkeypatch.setenv("KALSHI_SHADOW_MODELS", value)
        with pytest.raises(ConfigError, match=words):
            registered_models()


TOY = '''
    """A model from outside kalshi_shadow: the mid, tilted ten cents toward YES."""
    import numpy as np


    class Tilted:
        name = "toy-v1"

        def prob_yes(self, x):
            return np.clip(x.p_mid + 0.10, 0.0, 1.0)
'''


@pytest.fixture
def toy(monkeypatch, tmp_path: Path) -> Path:
    (tmp_path / "toymodels.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KALSHI_SHADOW_MODELS", "toymodels:Tilted")
    rules = RULES.read_text().replace('[rule_sets.eager]\nmodel = "avg60-v1"', '[rule_sets.eager]\nmodel = "toy-v1"')
    assert 'model = "toy-v1"' in rules
    (tmp_path / "rules.toml").write_text(rules)
    monkeypatch.setenv("KALSHI_SHADOW_RULES", str(tmp_path / "rules.toml"))
    return tmp_path


@pytest.mark.slow
def test_a_toy_model_from_outside_is_priced_scored_reported_and_decided(toy: Path) -> None:
    assert model_names()[-1] == "toy-v1"
    db = toy / "w.duckdb"
    conn = utc(duckdb.connect(str(db)))
    ensure_schema(conn)
    build_history(conn, days=2, strikes=2, pending_hours=6)
    # Snapshots: every quote, the model's own numbers; unpriceable rows stay NULL whatever it returned.
    bad = conn.execute("""SELECT count(*) FROM kalshi_edge_snapshots WHERE model_version = 'toy-v1' AND p_mid IS NOT NULL
                          AND list_has_any(reasons, ['no_spot', 'closed', 'strike_unknown']) = false
                          AND abs(p_model - least(p_mid + 0.10, 1.0)) > 1e-12""").fetchall()[0][0]
    toy_rows, quotes = conn.execute("""SELECT count(*) FILTER (WHERE model_version = 'toy-v1'), count(DISTINCT quote_key)
                                       FROM kalshi_edge_snapshots""").fetchall()[0]
    assert bad == 0 and toy_rows == quotes > 1000
    # Scores: paired with the mid on the same rows.
    n_scored = conn.execute("""SELECT count(*) FROM kalshi_edge_snapshot_scores
                               WHERE model_version = 'toy-v1' AND excluded_reason IS NULL""").fetchall()[0][0]
    assert n_scored > 500
    # Decisions: the rule set that names it decides on its probabilities.
    decided = conn.execute("""SELECT count(*), count(*) FILTER (WHERE action = 'take') FROM kalshi_would_trades
                              WHERE rule_set = 'eager' AND model_version = 'toy-v1'""").fetchall()[0]
    assert decided[0] > 0 and decided[1] > 0
    # The summary: takes' PnL per contract from the decision log, and skill with an interval clustered by event.
    rows = conn.execute("""
        SELECT series_ticker, horizon, n_takes, realised_pnl_per_contract, n_events, brier_skill_vs_mid, brier_skill_lo, verdict
        FROM kalshi_score_summary WHERE model_version = 'toy-v1' AND n_events > 1""").fetchall()
    assert rows and conn.execute("SELECT sum(n_takes) FROM kalshi_score_summary WHERE model_version = 'toy-v1'").fetchall() == conn.execute(
        """SELECT count(*) FROM kalshi_would_trades AS t JOIN kalshi_contracts AS c USING (ticker)
           WHERE t.model_version = 'toy-v1' AND t.action = 'take' AND c.outcome IS NOT NULL""").fetchall()
    for series, horizon, n_takes, pnl, n_events, bss, lo, verdict in rows:
        tk = conn.execute("""SELECT t.realised_pnl, t.contracts FROM kalshi_would_trades AS t JOIN kalshi_edge_snapshots AS s USING (snapshot_id)
                             WHERE t.model_version = 'toy-v1' AND t.action = 'take' AND t.realised_pnl IS NOT NULL AND t.series_ticker = ?
                               AND (CASE WHEN s.tau_seconds < 60 THEN '0-1m' WHEN s.tau_seconds < 900 THEN '1-15m'
                                         WHEN s.tau_seconds < 3600 THEN '15-60m' WHEN s.tau_seconds < 21600 THEN '1-6h' ELSE '6h+' END) = ?""",
                          [series, horizon]).fetchnumpy()
        assert (pnl is None and len(tk["contracts"]) == 0) or pnl == pytest.approx(tk["realised_pnl"].sum() / tk["contracts"].sum())
        ev = conn.execute("""SELECT c.event_ticker, sum(x.brier_model), sum(x.brier_mid) FROM kalshi_edge_snapshot_scores AS x
                             JOIN kalshi_contracts AS c USING (ticker) WHERE x.model_version = 'toy-v1' AND x.excluded_reason IS NULL
                               AND x.series_ticker = ? AND (CASE WHEN x.tau_seconds < 60 THEN '0-1m' WHEN x.tau_seconds < 900 THEN '1-15m'
                                   WHEN x.tau_seconds < 3600 THEN '15-60m' WHEN x.tau_seconds < 21600 THEN '1-6h' ELSE '6h+' END) = ?
                             GROUP BY 1""", [series, horizon]).fetchnumpy()
        bm, bk = ev["sum(x.brier_model)"], ev["sum(x.brier_mid)"]
        r = bm.sum() / bk.sum()
        se = np.sqrt(len(bm) / (len(bm) - 1) * np.sum(((bm - r * bk) / bk.sum()) ** 2))
        assert n_events == len(bm) and bss == pytest.approx(1 - r) and lo == pytest.approx(1 - r - 1.96 * se)
        assert verdict == ("beats the mid" if lo > 0 else "worse than the mid" if 1 - r + 1.96 * se < 0 else "no detectable difference")
    # The report ranks it against the mid like the built-ins.
    report = build(collect(duckdb_query(conn), Period.day(START.date())))
    ranked = [b.table for s in report.sections for b in s.blocks if b.kind == "table" and "model" in b.table.columns]
    assert any("toy-v1" in t["model"].to_list() for t in ranked)
    # ... and says in words whether it beats the mid, by its interval.
    head = next(b.table for s in report.sections for b in s.blocks if b.kind == "table" and b.caption.startswith("Brier score, log loss"))
    toy_row = head.filter(head["model"] == "toy-v1").row(0, named=True)
    lo, hi = (float(v) for v in toy_row["BSS vs mid [95% CI, events]"].split("[")[1].rstrip("]").split(","))
    said = "beats the mid" if lo > 0 else "worse than the mid" if hi < 0 else "no detectable difference"
    words = " ".join(b.caption for s in report.sections for b in s.blocks if b.kind == "text")
    assert f"toy-v1: {said} ({toy_row['paired rows']} paired rows" in words
    before = conn.execute(f"SELECT {SNAPSHOT_COLUMNS} FROM kalshi_edge_snapshots WHERE quote_date = ? ORDER BY snapshot_id",
                          [START.date()]).fetchall()
    conn.close()
    # A backfill of the day through the real asset gives the same rows, the toy's included.
    wh = Warehouse(database=str(db), raw_dir=str(toy / "raw"))
    (toy / "raw").mkdir()
    assert dg.materialize([pricing.kalshi_edge_snapshots], partition_key=START.date().isoformat(), resources={"warehouse": wh}).success
    with utc(duckdb.connect(str(db), read_only=True)) as conn:
        after = conn.execute(f"SELECT {SNAPSHOT_COLUMNS} FROM kalshi_edge_snapshots WHERE quote_date = ? ORDER BY snapshot_id",
                             [START.date()]).fetchall()
    assert after == before


def _recal(conn: duckdb.DuckDBPyConnection) -> dict:
    return dict(((k, s), p) for k, s, p in conn.execute("""
        SELECT quote_key, seen_ts, p_model FROM kalshi_edge_snapshots WHERE model_version = ?""", [Recalibrated.name]).fetchall())


def test_the_recalibrated_model_is_walk_forward_and_leak_free(tmp_path: Path) -> None:
    base = tmp_path / "base.duckdb"
    conn = utc(duckdb.connect(str(base)))
    ensure_schema(conn)
    build_history(conn, days=2, strikes=2, pending_hours=2)  # priced before any outcome was known: no fit yet
    assert conn.execute("SELECT count(p_model) FROM kalshi_edge_snapshots WHERE model_version = ?", [Recalibrated.name]).fetchall() == [(0,)]
    conn.close()
    cut = START + timedelta(days=1)
    for name in ("a", "b"):
        shutil.copy(base, tmp_path / f"{name}.duckdb")
    conns = {n: utc(duckdb.connect(str(tmp_path / f"{n}.duckdb"))) for n in ("a", "b")}
    # In b, every outcome that became known after the cut is the opposite: the future differs, the past does not.
    flipped = conns["b"].execute("""UPDATE kalshi_contracts SET first_outcome = CASE first_outcome WHEN 'yes' THEN 'no' ELSE 'yes' END
                                    WHERE first_outcome IN ('yes', 'no') AND outcome_known_ts >= ?""", [cut]).fetchall()[0][0]
    assert flipped > 20
    for c in conns.values():  # re-price each day in order, as a backfill after the fact: the fits are made walk-forward
        c.execute("DELETE FROM kalshi_model_fits")  # the empty fits stored while nothing was known, rebuilt
        for d in range(2):
            recompute_day(c, (START + timedelta(days=d)).date(), lot=100)
    a, b = _recal(conns["a"]), _recal(conns["b"])
    assert a.keys() == b.keys()
    early = [k for k in a if k[1] < cut]
    late = [k for k in a if k[1] >= cut + timedelta(hours=1)]
    assert sum(a[k] is not None for k in early) > 500  # fitted well before the cut
    assert all(a[k] == b[k] for k in early)  # nothing known after a quote was seen moved its probability
    assert sum(a[k] != b[k] for k in late) > 100  # and the test can tell: later outcomes do move later fits
    fits = conns["a"].execute("SELECT count(*), count(a), min(refit_ts) FROM kalshi_model_fits").fetchall()[0]
    assert fits[1] > 10 and fits[2] >= START.replace(tzinfo=timezone.utc)
    # The fits summed the training bins; read from the snapshots instead, every fit is the same to the last bit.
    stored = conns["a"].execute("SELECT series_ticker, refit_ts, a, b, n_rows, n_events FROM kalshi_model_fits ORDER BY ALL").fetchall()
    for series, at, fa, fb, n, events in stored:
        rows = conns["a"].execute(TRAIN_SQL, {"champion": CHAMPION, "series": series, "boundary": at,
                                              "window": window_days() * 86400}).fetchnumpy()
        assert (int(rows["n"].sum()), int(rows["events"][0]) if len(rows["n"]) else 0) == (n, events)
        if fa is not None:
            assert fit_platt(*(np.asarray(rows[c], dtype=float) for c in ("x", "n", "k"))) == (fa, fb)
    assert sum(n for *_, n, _ in stored) > 10_000
    # A second backfill reads the stored fits: the same rows.
    again = conns["a"]
    recompute_day(again, (START + timedelta(days=1)).date(), lot=100)
    assert _recal(again) == a
    for c in conns.values():
        c.close()
