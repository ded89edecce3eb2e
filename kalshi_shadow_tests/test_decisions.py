"""Issue 9: would-trade decisions. Rules from a validated TOML file, fractional Kelly within every cap, a decision
log that is a tape, realised PnL net of the rounded per-order fee, and re-runs and new rule sets that leave the
log of others alone. Real DuckDB files; the Dagster asset materialized for real."""

from __future__ import annotations

import math
import random
import tomllib
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kalshi_shadow.decisions import rules
from kalshi_shadow.decisions.engine import decide, rerun_from, settle
from kalshi_shadow.decisions.rulesets import DEFAULT_RULES, RulesError, load_rule_sets
from kalshi_shadow.decisions.sizing import order_cost, size_take
from kalshi_shadow.defs import decisions as decisions_defs
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.pricing.fees import order_fee
from kalshi_shadow.pricing.snapshots import STATE_FRONTIER, insert_wide_snapshots
from kalshi_shadow.scoring.settlements import Observation, apply_observations
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.ddl import ensure_schema

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
BASE = {
    "model": "avg60-v1", "series": ["KXBTCD", "KXBTC15M"], "min_ev": 0.03, "max_spread": 0.06, "min_tau_seconds": 60,
    "max_tau_seconds": 86400, "max_spot_age_seconds": 10, "max_quote_age_seconds": 10, "min_ask_size": 10,
    "cooldown_seconds": 60, "max_positions_per_event": 2, "max_takes_per_day": 10, "bankroll": 1000.0,
    "kelly_fraction": 0.25, "max_contracts_per_trade": 200, "max_stake_per_trade": 50.0, "max_stake_per_event": 100.0,
    "haircut_k": 0.0, "haircut_window_days": 7,
}


def _toml(sets: dict[str, dict]) -> str:
    def value(v):
        return "[" + ", ".join(f'"{x}"' for x in v) + "]" if isinstance(v, list) else f'"{v}"' if isinstance(v, str) else repr(v)
    return "\n".join(f"[rule_sets.{name}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in body.items()) for name, body in sets.items())


def _rule_set(tmp_path: Path, name: str = "t", **overrides):
    path = tmp_path / f"{name}.toml"
    path.write_text(_toml({name: {**BASE, **overrides}}))
    return load_rule_sets(path)[0]


def _warehouse(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)
    return conn


def _snap(conn: duckdb.DuckDBPyConnection, ticker: str, at: datetime, *, event: str | None = None, series: str = "KXBTCD",
          p: float | None = 0.6, yes_bid: str | None = "0.48", yes_ask: str | None = "0.50", ask_size: int = 100,
          tau: float = 3600, spot_age: float = 1, quote_age: float = 1, model: str = "avg60-v1",
          trading_active: bool | None = None) -> None:
    """One snapshot as the pricing step writes it: fees per contract of a 100-lot, EVs from them."""
    no_bid = None if yes_ask is None else str(1 - Decimal(yes_ask))
    no_ask = None if yes_bid is None else str(1 - Decimal(yes_bid))
    fee = lambda a: None if a is None else float(order_fee(Decimal(a), 100, "quadratic")) / 100  # noqa: E731
    ev_yes = None if p is None or yes_ask is None else p - float(yes_ask) - fee(yes_ask)
    ev_no = None if p is None or no_ask is None else (1 - p) - float(no_ask) - fee(no_ask)
    key = str(uuid.uuid4())
    insert_wide_snapshots(conn, """
        INSERT INTO kalshi_edge_snapshots (quote_key, quote_date, ticker, series_ticker, event_ticker, model_version,
            quote_ts, seen_ts, created_at, tau_seconds, spot_age_seconds, quote_age_seconds, yes_bid, yes_ask, no_bid, no_ask,
            yes_bid_size, yes_ask_size, lot_size, fee_type, fee_multiplier, fee_yes, fee_no, p_model, reasons, rules_version,
            trading_active)
        VALUES (?, ?::DATE, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, 100, 'quadratic', 1.0, ?, ?, ?, [], 't', ?)""",
                 [key, at.date(), ticker, series, event or ticker.rsplit("-", 1)[0], model, at - timedelta(seconds=quote_age), at,
                  tau, spot_age, quote_age, yes_bid, yes_ask, no_bid, no_ask, ask_size, ask_size, fee(yes_ask), fee(no_ask), p,
                  trading_active])
    if p is not None:  # the stored EVs are the pricing step's: check them against this helper's arithmetic
        got = conn.execute("SELECT ev_yes, ev_no FROM kalshi_edge_snapshots WHERE quote_key = ?", [key]).fetchall()[0]
        assert got == (pytest.approx(ev_yes) if ev_yes is not None else None, pytest.approx(ev_no) if ev_no is not None else None)


def _priced_until(conn: duckdb.DuckDBPyConnection, t: datetime) -> None:
    conn.execute("INSERT INTO asset_watermarks VALUES (?, ?) ON CONFLICT (asset) DO UPDATE SET value = excluded.value",
                 [STATE_FRONTIER, int(t.timestamp() * 1e6)])


def _settle(conn: duckdb.DuckDBPyConnection, ticker: str, outcome: str, at: datetime) -> None:
    """The exchange's answer for `ticker`, recorded at `at` by the settlements step's own code."""
    conn.execute("INSERT INTO kalshi_contracts (ticker, series_ticker, event_ticker) VALUES (?, 'KXBTCD', ?) ON CONFLICT DO NOTHING",
                 [ticker, ticker.rsplit("-", 1)[0]])
    apply_observations(conn, [Observation(ticker, "determined", outcome, None, None, None)], at)


def _log(conn: duckdb.DuckDBPyConnection, version: str | None = None) -> list[tuple]:
    return conn.execute("""SELECT ticker, action, reason, side, contracts, fee, cost, bankroll_before FROM kalshi_would_trades
                           WHERE ? IS NULL OR rule_set_version = ? ORDER BY decided_ts, ticker""", [version, version]).fetchall()


# ---- the rules file --------------------------------------------------------------------------------------------
def test_the_shipped_rules_file_has_two_sets_with_distinct_versions() -> None:
    sets = load_rule_sets(DEFAULT_RULES)
    assert len(sets) >= 2 and len({s.version for s in sets}) == len(sets)
    assert set(tomllib.loads(DEFAULT_RULES.read_text())["rule_sets"]) == {s.name for s in sets}


@pytest.mark.parametrize("edit, key", [
    ({"min_edge": 0.02}, "min_edge"),                  # an unknown key (a typo) is named
    ({"min_ev": "0.02"}, "min_ev"),                    # a string where a number is due
    ({"kelly_fraction": 1.5}, "kelly_fraction"),       # out of range
    ({"max_takes_per_day": 2.5}, "max_takes_per_day"), # not an integer
    ({"series": ["KXETH"]}, "series"),
    ({"model": "gpt"}, "model"),
])
def test_a_bad_rules_file_is_refused_with_the_key_named(tmp_path: Path, edit: dict, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_toml({"x": {**BASE, **edit}}))
    with pytest.raises(RulesError, match=key):
        load_rule_sets(path)


def test_a_missing_key_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    body = dict(BASE)
    del body["cooldown_seconds"]
    (tmp_path / "m.toml").write_text(_toml({"x": body}))
    with pytest.raises(RulesError, match="cooldown_seconds"):
        load_rule_sets(tmp_path / "m.toml")
    with pytest.raises(RulesError, match="no such rules file"):
        load_rule_sets(tmp_path / "absent.toml")


def test_a_rule_sets_version_is_a_hash_of_its_content(tmp_path: Path) -> None:
    a, b = _rule_set(tmp_path, "a"), _rule_set(tmp_path, "a", min_ev=0.031)
    assert a.version != b.version and a.version.startswith("a@") and _rule_set(tmp_path, "a").version == a.version


# ---- each rule blocks with its named reason ---------------------------------------------------------------------
STATELESS_CASES = {
    "series_not_allowed": {"series": "KXBTC"},
    "exchange_paused": {"trading_active": False},  # (the clean candidate beside it: status unknown, NULL, not a pause)
    "not_priced": {"p": None},
    "too_close_to_close": {"tau": 30},
    "too_far_from_close": {"tau": 10 ** 6},
    "spot_stale": {"spot_age": 11},
    "quote_stale": {"quote_age": 11},
    "no_ask": {"yes_ask": None, "yes_bid": None},
    "one_sided_book": {"yes_bid": None},
    "spread_wide": {"yes_bid": "0.40"},
    "ev_below_min": {"p": 0.54},
    "ask_size_below_min": {"ask_size": 5},
}


def test_every_stateless_rule_has_a_case() -> None:
    assert set(STATELESS_CASES) == {name for name, _ in rules.STATELESS}


@pytest.mark.parametrize("reason", list(STATELESS_CASES))
def test_each_stateless_rule_blocks_with_its_reason(tmp_path: Path, reason: str) -> None:
    conn, rs = _warehouse(tmp_path), _rule_set(tmp_path)
    _snap(conn, "KXBTCD-E1-A", T0, **STATELESS_CASES[reason])
    _snap(conn, "KXBTCD-E2-B", T0)  # a clean candidate beside it is taken
    _priced_until(conn, T0)
    decide(conn, rs)
    assert [(t, a, r) for t, a, r, *_ in _log(conn)] == [("KXBTCD-E1-A", "skip", reason), ("KXBTCD-E2-B", "take", None)]


def test_cooldown_event_cap_and_day_cap(tmp_path: Path) -> None:
    conn, rs = _warehouse(tmp_path), _rule_set(tmp_path, max_takes_per_day=3)
    _snap(conn, "KXBTCD-E1-A", T0)
    _snap(conn, "KXBTCD-E1-B", T0 + timedelta(seconds=30))   # same event inside the 60 s cool-down
    _snap(conn, "KXBTCD-E1-B", T0 + timedelta(seconds=90))   # after it: taken
    _snap(conn, "KXBTCD-E1-C", T0 + timedelta(seconds=200))  # a third in the event: cap of 2
    _snap(conn, "KXBTCD-E2-A", T0 + timedelta(seconds=300))  # third take of the day
    _snap(conn, "KXBTCD-E3-A", T0 + timedelta(seconds=400))  # fourth: day cap
    _snap(conn, "KXBTCD-E4-A", T0 + timedelta(days=1))       # a new UTC day
    _priced_until(conn, T0 + timedelta(days=1))
    decide(conn, rs)
    assert [(t, a, r) for t, a, r, *_ in _log(conn)] == [
        ("KXBTCD-E1-A", "take", None), ("KXBTCD-E1-B", "skip", rules.COOLDOWN), ("KXBTCD-E1-B", "take", None),
        ("KXBTCD-E1-C", "skip", rules.EVENT_CAP), ("KXBTCD-E2-A", "take", None), ("KXBTCD-E3-A", "skip", rules.DAY_CAP),
        ("KXBTCD-E4-A", "take", None)]


def test_stake_caps_and_an_empty_bankroll_block_with_their_reasons(tmp_path: Path) -> None:
    conn = _warehouse(tmp_path)
    rs = _rule_set(tmp_path, kelly_fraction=1.0, max_stake_per_trade=50.0, max_stake_per_event=50.0,
                   max_positions_per_event=5, cooldown_seconds=0, bankroll=100.0)
    _snap(conn, "KXBTCD-E1-A", T0, p=0.99)                          # Kelly wants ~all: the trade cap (50) binds
    _snap(conn, "KXBTCD-E1-B", T0 + timedelta(seconds=1), p=0.99)   # the event's 50 are used up
    for i in range(2, 8):                                           # other events until the cash is gone
        _snap(conn, f"KXBTCD-E{i}-A", T0 + timedelta(seconds=i), p=0.99)
    _snap(conn, "KXBTCD-E9-A", T0 + timedelta(seconds=9), p=0.5125, yes_bid="0.49", yes_ask="0.50")  # a tiny edge ...
    _priced_until(conn, T0 + timedelta(seconds=9))
    decide(conn, rs)
    log = _log(conn)
    assert [(t, a, r) for t, a, r, *_ in log][:2] == [("KXBTCD-E1-A", "take", None), ("KXBTCD-E1-B", "skip", rules.EVENT_STAKE_CAP)]
    assert 49 <= log[0][6] <= 50.0
    assert (rules.BANKROLL in {r for _, _, r, *_ in log}) and all(b >= 0 for *_, b in log)
    takes = [row for row in log if row[1] == "take"]
    for (*_, cost, before), (*_, after) in zip(takes, takes[1:]):  # each take's cost leaves the cash, nothing else does
        assert after == pytest.approx(before - cost)
    rs2 = _rule_set(tmp_path, "tiny", min_ev=-1.0, kelly_fraction=0.01)  # ... whose Kelly stake is under one contract
    decide(conn, rs2)
    assert ("KXBTCD-E9-A", "skip", rules.NO_KELLY_SIZE) in [(t, a, r) for t, a, r, *_ in _log(conn, rs2.version)]


# ---- sizing ----------------------------------------------------------------------------------------------------
def test_sizing_never_exceeds_a_cap_or_the_ask_size(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(3000):
        if i % 100 == 0:  # a new rule set every 100 draws
            rs = _rule_set(tmp_path, kelly_fraction=rng.choice([0.1, 0.5, 1.0]), max_contracts_per_trade=rng.randint(1, 500),
                           max_stake_per_trade=rng.uniform(1, 200), max_stake_per_event=rng.uniform(1, 300))
        ask = Decimal(rng.randint(1, 99)) / 100
        p = min(0.999, float(ask) + rng.uniform(0, 0.5))
        cash, event_stake, shown = rng.uniform(0, 500), rng.uniform(0, 150), rng.randint(0, 400)
        s = size_take(rs, p=p, ask=ask, ask_size=shown, fee_type="quadratic", fee_multiplier=1.0, cash=cash, event_stake=event_stake)
        assert s.contracts <= shown and s.contracts <= rs.max_contracts_per_trade
        if s.contracts:
            assert s.cost <= min(cash, rs.max_stake_per_trade, rs.max_stake_per_event - event_stake) + 1e-9
            assert (s.fee, s.cost) == order_cost([(ask, shown)], s.contracts, "quadratic", 1.0)
            c = s.cost / s.contracts  # all-in cost per contract, the order's own rounded fee included
            assert s.cost <= rs.kelly_fraction * (p - c) / (1 - c) * cash * (1 + 1e-9)  # never more than Kelly
        else:
            assert s.blocked_by in rules.STATEFUL


def test_a_take_that_walks_the_book_pays_each_level_and_the_fee_on_its_vwap(tmp_path: Path) -> None:
    """Independent arithmetic: the contracts bought level by level, their VWAP, Kalshi's per-order fee on it."""
    rng = random.Random(11)
    rs = _rule_set(tmp_path, kelly_fraction=1.0, max_contracts_per_trade=5000, max_stake_per_trade=10_000.0,
                   max_stake_per_event=10_000.0)
    walked = 0
    for _ in range(2000):
        best = rng.randint(1, 90)
        levels = [(Decimal(best + k) / 100, float(rng.randint(0, 60))) for k in range(rng.randint(1, 5))]
        p = min(0.999, float(levels[0][0]) + rng.uniform(0, 0.5))
        s = size_take(rs, p=p, ask=levels[0][0], ask_size=levels[0][1], fee_type="quadratic", fee_multiplier=1.0,
                      cash=rng.uniform(0, 2000), event_stake=0.0, levels=levels)
        if not s.contracts:
            continue
        assert s.contracts <= sum(int(n) for _, n in levels)  # never more than the levels held
        left, paid, used = s.contracts, Decimal(0), []
        for price, held in levels:  # cheapest first, as much as each level holds
            k = min(left, int(held))
            if k:
                paid, left = paid + price * k, left - k
                used.append((float(price), k, held))
        assert left == 0 and s.levels_used == tuple(used)
        vwap = paid / s.contracts
        fee = math.ceil(Decimal("0.07") * s.contracts * vwap * (1 - vwap) * 100 - Decimal("1e-12")) / 100
        assert s.avg_price == pytest.approx(float(vwap)) and s.fee == pytest.approx(fee)
        assert s.cost == pytest.approx(float(paid) + fee)
        walked += len(used) > 1
    assert walked > 100  # the draws did walk past the top level


def test_the_log_records_the_levels_a_take_walked(tmp_path: Path) -> None:
    conn, rs = _warehouse(tmp_path), _rule_set(tmp_path, kelly_fraction=1.0, max_stake_per_trade=100.0)
    _snap(conn, "KXBTCD-E1-A", T0, p=0.7, yes_bid="0.48", yes_ask="0.50", ask_size=10)
    # The quote behind it, from the stream: NO bids 0.50 x 10, 0.49 x 20, 0.48 x 500 = YES asks 0.50, 0.51, 0.52.
    conn.execute("""INSERT INTO kalshi_quotes (ts, received_ts, ticker, quote_key, load_id, yes_bid, yes_ask, no_bid_levels)
                    SELECT quote_ts, seen_ts, ticker, quote_key, 1, yes_bid, yes_ask,
                           [{'price': 0.50, 'size': 10}, {'price': 0.49, 'size': 20}, {'price': 0.48, 'size': 500}]
                    FROM kalshi_edge_snapshots""")
    _priced_until(conn, T0)
    run = decide(conn, rs)
    (contracts, fee, cost, avg, used), = conn.execute(
        "SELECT contracts, fee, cost, avg_price, levels_used FROM kalshi_would_trades WHERE action = 'take'").fetchall()
    assert [(u["price"], u["contracts"]) for u in used][:2] == [(0.50, 10), (0.51, 20)] and contracts > 30
    k3 = contracts - 30
    assert used[2] == {"price": 0.52, "contracts": k3, "size": 500.0} and run.bad_takes == 0
    paid = Decimal("5.00") + Decimal("10.20") + Decimal("0.52") * k3
    assert avg == pytest.approx(float(paid / contracts))
    assert fee == pytest.approx(float(order_fee(paid / contracts, contracts, "quadratic")))
    assert cost == pytest.approx(float(paid) + fee)


# ---- settlement, re-runs, rule set versions ----------------------------------------------------------------------
def test_realised_pnl_is_net_of_the_rounded_per_order_fee(tmp_path: Path) -> None:
    conn, rs = _warehouse(tmp_path), _rule_set(tmp_path, max_contracts_per_trade=37)
    _snap(conn, "KXBTCD-E1-A", T0, p=0.7, yes_bid="0.43", yes_ask="0.45")              # YES at 0.45, wins
    _snap(conn, "KXBTCD-E2-A", T0 + timedelta(seconds=1), p=0.25, yes_bid="0.57", yes_ask="0.59")  # NO at 0.43, loses
    _priced_until(conn, T0 + timedelta(seconds=1))
    decide(conn, rs)
    _settle(conn, "KXBTCD-E1-A", "yes", T0 + timedelta(hours=1))
    _settle(conn, "KXBTCD-E2-A", "yes", T0 + timedelta(hours=1))
    assert settle(conn) == 2
    rows = conn.execute("""SELECT ticker, side, ask, contracts, fee, realised_pnl FROM kalshi_would_trades
                           WHERE action = 'take' ORDER BY ticker""").fetchall()
    (t1, s1, a1, n1, f1, pnl1), (t2, s2, a2, n2, f2, pnl2) = rows
    assert (s1, a1, n1, s2, a2, n2) == ("yes", Decimal("0.45"), 37, "no", Decimal("0.43"), 37)
    fee1 = math.ceil(0.07 * 37 * 0.45 * 0.55 * 100 - 1e-9) / 100  # 0.6409 -> $0.65, per order
    fee2 = math.ceil(0.07 * 37 * 0.43 * 0.57 * 100 - 1e-9) / 100  # 0.6348 -> $0.64
    assert (f1, f2) == (pytest.approx(fee1), pytest.approx(fee2))
    assert pnl1 == pytest.approx(37 * 1.0 - 37 * 0.45 - fee1) and pnl2 == pytest.approx(0 - 37 * 0.43 - fee2)


def test_the_bankroll_gets_a_payout_only_once_the_outcome_was_read(tmp_path: Path) -> None:
    conn, rs = _warehouse(tmp_path), _rule_set(tmp_path, bankroll=100.0, max_stake_per_event=1000.0, max_stake_per_trade=1000.0)
    _snap(conn, "KXBTCD-E1-A", T0, p=0.9)
    _snap(conn, "KXBTCD-E2-A", T0 + timedelta(minutes=30), p=0.9)   # before the first outcome is read
    _snap(conn, "KXBTCD-E3-A", T0 + timedelta(minutes=90), p=0.9)   # after
    _settle(conn, "KXBTCD-E1-A", "yes", T0 + timedelta(hours=1))
    _priced_until(conn, T0 + timedelta(minutes=90))
    decide(conn, rs)
    (_, a1, _, _, n1, _, c1, b1), (_, a2, _, _, _, _, c2, b2), (_, a3, _, _, _, _, _, b3) = _log(conn)
    assert (a1, a2, a3) == ("take", "take", "take") and b1 == 100.0
    assert b2 == pytest.approx(100.0 - c1)                       # E1's payout is not known yet at 12:30
    assert b3 == pytest.approx(100.0 - c1 - c2 + n1 * 1.0)       # at 13:30 it is (read at 13:00)


def test_rerunning_a_day_gives_the_same_log_and_a_new_rule_set_leaves_the_old_one_alone(tmp_path: Path) -> None:
    conn = _warehouse(tmp_path)
    rng = random.Random(3)
    for i in range(300):
        _snap(conn, f"KXBTCD-E{i % 17}-{i % 5}", T0 + timedelta(minutes=7 * i), p=rng.uniform(0.3, 0.8),
              yes_bid=f"{rng.randint(40, 49) / 100:.2f}", yes_ask="0.50", ask_size=rng.randint(1, 200))
        if i % 40 == 39:
            for k in range(5):
                _settle(conn, f"KXBTCD-E{(i - 20) % 17}-{k}", rng.choice(["yes", "no"]), T0 + timedelta(minutes=7 * i))
    _priced_until(conn, T0 + timedelta(minutes=7 * 300))
    first = _rule_set(tmp_path, "first", max_takes_per_day=20)
    decide(conn, first)
    before = conn.execute("SELECT * EXCLUDE (created_at) FROM kalshi_would_trades ORDER BY decision_id").fetchall()
    assert {a for _, a, *_ in _log(conn)} == {"take", "skip"}
    day2 = datetime.combine((T0 + timedelta(days=1)).date(), datetime.min.time(), tzinfo=timezone.utc)
    assert rerun_from(conn, first, day2) > 0
    decide(conn, first)
    assert conn.execute("SELECT * EXCLUDE (created_at) FROM kalshi_would_trades ORDER BY decision_id").fetchall() == before
    second = _rule_set(tmp_path, "second", min_ev=0.05, max_takes_per_day=5)
    decide(conn, second)
    assert conn.execute("SELECT * EXCLUDE (created_at) FROM kalshi_would_trades WHERE rule_set_version = ? ORDER BY decision_id",
                        [first.version]).fetchall() == before
    assert conn.execute("SELECT count(*) FROM kalshi_would_trades WHERE rule_set_version = ?", [second.version]).fetchall()[0][0] > 0


def test_the_haircut_uses_only_contracts_settled_before_the_decision(tmp_path: Path) -> None:
    conn, rs = _warehouse(tmp_path), _rule_set(tmp_path, haircut_k=1.0, min_ev=-1.0)
    _snap(conn, "KXBTCD-OLD-A", T0 - timedelta(hours=2), p=0.9, tau=7200)   # the model said 0.9 ...
    _settle(conn, "KXBTCD-OLD-A", "no", T0 - timedelta(hours=1))          # ... and it settled NO, read an hour ago: error 0.9
    _snap(conn, "KXBTCD-NEW-A", T0 - timedelta(minutes=30), p=0.2, tau=3600)
    _settle(conn, "KXBTCD-NEW-A", "yes", T0 + timedelta(minutes=5))       # read after the decision: must not count
    _snap(conn, "KXBTCD-E1-A", T0, p=0.6)
    _snap(conn, "KXBTCD-E2-A", T0 + timedelta(minutes=10), p=0.6)          # by now both count: (0.9 + 0.8) / 2
    _priced_until(conn, T0 + timedelta(minutes=10))
    decide(conn, rs)
    haircuts = dict(conn.execute("SELECT ticker, haircut FROM kalshi_would_trades WHERE ticker LIKE '%-E%'").fetchall())
    assert haircuts == {"KXBTCD-E1-A": pytest.approx(0.9), "KXBTCD-E2-A": pytest.approx(0.85)}


def test_the_asset_decides_in_dagster_and_its_checks_pass(tmp_path: Path) -> None:
    conn = _warehouse(tmp_path)
    for i in range(20):
        _snap(conn, f"KXBTCD-E{i}-A", T0 + timedelta(minutes=i))
    _priced_until(conn, T0 + timedelta(minutes=20))
    conn.close()
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    result = dg.materialize([decisions_defs.kalshi_would_trades], resources={"warehouse": wh})
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"takes_within_limits": True, "decisions_keep_up_with_snapshots": True, "state_matches_positions": True}
    meta = result.asset_materializations_for_node("kalshi_would_trades")[0].metadata
    assert meta["careful: takes this run"].value > 0 and meta["eager: takes this run"].value > 0
