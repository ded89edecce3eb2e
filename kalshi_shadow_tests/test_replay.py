"""Issue 15, item 2: replays off the live path. An edited rule set (a new version) replays days of history in bounded
slices of its own job while the live runs go on deciding the other sets up to the target every time, and the other
sets' logs come out exactly as in a warehouse where nothing replayed. Real DuckDB files, real Dagster
materializations (the decisions asset in live and in replay mode), the replay sensor evaluated on the instance."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kalshi_shadow import status
from kalshi_shadow.decisions import state
from kalshi_shadow.decisions.rulesets import DEFAULT_RULES, load_rule_sets
from kalshi_shadow.defs import decisions as decisions_defs
from kalshi_shadow.defs.pricing import LIVE_TAG
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
from kalshi_shadow.pricing.synthetic import generate, publish_until
from kalshi_shadow.reports.synthetic_history import RECENTRE_SQL, REDRAW_MIDS_SQL, build_history
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.contracts import refresh_contracts
from kalshi_shadow.warehouse.ddl import ensure_schema

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
DAYS = 3
END = START + timedelta(days=DAYS)
TICK = timedelta(minutes=10)
STAGED = ("syn_spot", "syn_kraken", "syn_bitstamp", "syn_markets", "syn_market_rows", "syn_quotes")


def _built(tmp_path: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """One synthetic history (priced, settled, decided by the shipped sets), copied under each name: the copies are
    the same rows, byte for byte (the generator's random draws are not reproducible across runs)."""
    first = tmp_path / "built.duckdb"
    conn = utc(duckdb.connect(str(first)))
    ensure_schema(conn)
    build_history(conn, start=START, days=DAYS, strikes=2, quote_every=60, pending_hours=2)
    conn.execute("CHECKPOINT")
    conn.close()
    paths = {name: tmp_path / f"{name}.duckdb" for name in names}
    for path in paths.values():
        shutil.copy(first, path)
    return paths


class Warehouses:
    """Two warehouses with the same history and the same live ticks; only one of them has the edited set."""

    def __init__(self, tmp_path: Path) -> None:
        self.paths = _built(tmp_path, ("replay", "control"))
        self.staged = tmp_path / "next"  # the two hours after the history, drawn once, as Parquet
        self.staged.mkdir()
        conn = utc(duckdb.connect())
        generate(conn, END, 2, strikes=2, quote_every=60, hour_offset=24 * DAYS, first_trade_id=86400 * DAYS)
        for q in RECENTRE_SQL:
            conn.execute(q)
        conn.execute(REDRAW_MIDS_SQL, {"noise": 0.06, "bias": 0.0})
        for t in STAGED:
            conn.execute(f"COPY {t} TO '{self.staged / t}.parquet' (FORMAT parquet)")
        conn.close()
        self.ticks = 0

    def tick(self) -> None:
        """The next 10 minutes land in both warehouses and are priced (as the live job's steps before decisions)."""
        self.ticks += 1
        for path in self.paths.values():
            conn = utc(duckdb.connect(str(path)))
            for t in STAGED:
                conn.execute(f"CREATE OR REPLACE TEMP TABLE {t} AS SELECT * FROM read_parquet('{self.staged / t}.parquet')")
            publish_until(conn, END + TICK * self.ticks, load_id=100 + self.ticks)
            refresh_contracts(conn)
            refresh_spot(conn)
            price_new_quotes(conn, lot=100)
            conn.close()

    def materialize(self, name: str, *, live: bool, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInJobResult:
        wh = Warehouse(database=str(self.paths[name]), raw_dir=str(self.paths[name].parent / "raw"))
        result = dg.materialize([decisions_defs.kalshi_would_trades], resources={"warehouse": wh}, instance=instance,
                                tags={LIVE_TAG: "live"} if live else None)
        assert result.success
        return result

    def log(self, name: str, versions: list[str]) -> list[tuple]:
        conn = utc(duckdb.connect(str(self.paths[name])))
        try:
            return conn.execute("""SELECT * EXCLUDE (created_at) FROM kalshi_would_trades
                                   WHERE rule_set_version IN (SELECT unnest(?::VARCHAR[])) ORDER BY decision_id""", [versions]).fetchall()
        finally:
            conn.close()

    def states(self, name: str) -> tuple[datetime | None, dict[str, state.VersionState]]:
        conn = utc(duckdb.connect(str(self.paths[name])))
        try:
            return state.target(conn), {s.version: s for s in state.load_all(conn)}
        finally:
            conn.close()


@pytest.fixture
def rules(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped sets, and the shipped sets plus `careful_edited`: `careful` with a lower min_ev (a new version)."""
    shipped = tmp_path / "shipped.toml"
    shipped.write_text(DEFAULT_RULES.read_text())
    text = DEFAULT_RULES.read_text()
    careful = text[text.index("[rule_sets.careful]"):text.index("[rule_sets.eager]")]
    edited = tmp_path / "edited.toml"
    edited.write_text(text + "\n" + careful.replace("[rule_sets.careful]", "[rule_sets.careful_edited]")
                      .replace("min_ev = 0.03 ", "min_ev = 0.02 "))
    return shipped, edited


@pytest.mark.slow
def test_an_edited_rule_set_replays_in_slices_while_the_others_stay_live_and_unchanged(
        tmp_path: Path, rules: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    shipped, edited = rules
    whs = Warehouses(tmp_path)
    live_versions = [rs.version for rs in load_rule_sets(shipped)]
    new = next(rs for rs in load_rule_sets(edited) if rs.name == "careful_edited")
    monkeypatch.setenv("KALSHI_SHADOW_REPLAY_BUDGET_SECONDS", "0.05")  # a slice is one chunk (6 h of history)
    instance = dg.DagsterInstance.ephemeral()

    progress = []
    for _ in range(6):
        whs.tick()
        monkeypatch.setenv("KALSHI_SHADOW_RULES", str(shipped))
        whs.materialize("control", live=True)
        monkeypatch.setenv("KALSHI_SHADOW_RULES", str(edited))
        result = whs.materialize("replay", live=True, instance=instance)
        # The live run registered the new version and left it to the replay job; the others are at the target.
        target, states = whs.states("replay")
        assert states[new.version].replaying
        assert all(states[v].frontier == target for v in live_versions)
        assert result.asset_materializations_for_node("kalshi_would_trades")[0].metadata["replaying"].value == [new.version]
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"takes_within_limits": True, "decisions_keep_up_with_snapshots": True, "state_matches_positions": True}
        # The sensor asks for the next slice from what the live run reported; the slice runs.
        request = decisions_defs.decision_replay_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(request, dg.RunRequest)
        whs.materialize("replay", live=False, instance=instance)
        progress.append(whs.states("replay")[1][new.version].frontier)

    assert progress == sorted(progress) and len(set(progress)) == len(progress)  # one bounded slice per run, forward
    target, states = whs.states("replay")
    assert states[new.version].replaying and START < states[new.version].frontier < target
    st = status.warehouse(whs.paths["replay"], 5.0, datetime.now(timezone.utc))
    shown = st["decisions"]["versions"][new.version]
    assert shown["replaying"] and 0 < shown["replay_progress"] < 1

    # Slices until it has caught up; then the live runs decide it like the others.
    for _ in range(40):
        whs.materialize("replay", live=False, instance=instance)
        if not whs.states("replay")[1][new.version].replaying:
            break
    assert not whs.states("replay")[1][new.version].replaying
    assert isinstance(decisions_defs.decision_replay_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    whs.tick()
    monkeypatch.setenv("KALSHI_SHADOW_RULES", str(shipped))
    whs.materialize("control", live=True)
    monkeypatch.setenv("KALSHI_SHADOW_RULES", str(edited))
    whs.materialize("replay", live=True, instance=instance)
    target, states = whs.states("replay")
    assert all(states[v].frontier == target for v in [*live_versions, new.version])

    # The other sets' logs are exactly those of the warehouse where nothing replayed.
    assert whs.log("replay", live_versions) == whs.log("control", live_versions)
    assert len(whs.log("replay", [new.version])) > 0

    # Taken out of the rules file, the version is retired: it stops deciding, and the warehouse says so.
    whs.tick()
    monkeypatch.setenv("KALSHI_SHADOW_RULES", str(shipped))
    whs.materialize("replay", live=True, instance=instance)
    target, states = whs.states("replay")
    assert not states[new.version].in_rules_file and states[new.version].frontier < target
    assert all(states[v].in_rules_file and states[v].frontier == target for v in live_versions)
    st = status.warehouse(whs.paths["replay"], 5.0, datetime.now(timezone.utc))
    assert st["decisions"]["versions"][new.version]["in_rules_file"] is False


def test_a_sliced_replay_writes_the_log_of_one_uninterrupted_replay(tmp_path: Path, rules: tuple[Path, Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """rerun_from and a new version replay in slices; the slices change nothing in what is written."""
    from kalshi_shadow.decisions.engine import decide, rerun_from

    _, edited = rules
    new = next(rs for rs in load_rule_sets(edited) if rs.name == "careful_edited")
    paths = _built(tmp_path, ("sliced", "whole"))
    sliced = utc(duckdb.connect(str(paths["sliced"])))
    while not decide(sliced, new, budget_seconds=0).caught_up:
        pass
    day2 = START + timedelta(days=1)
    careful = next(rs for rs in load_rule_sets(edited) if rs.name == "careful")
    assert rerun_from(sliced, careful, day2) > 0
    assert state.load(sliced, careful.version).replaying
    while not decide(sliced, careful, budget_seconds=0).caught_up:
        pass
    whole = utc(duckdb.connect(str(paths["whole"])))
    decide(whole, new)
    q = "SELECT * EXCLUDE (created_at) FROM kalshi_would_trades WHERE rule_set_version = ? ORDER BY decision_id"
    for v in (new.version, careful.version):
        assert sliced.execute(q, [v]).fetchall() == whole.execute(q, [v]).fetchall()
    assert state.load(sliced, careful.version).cash == pytest.approx(state.load(whole, careful.version).cash, abs=1e-9)
    sliced.close()
    whole.close()
