"""Issue 15, item 3: upgrades migrate. A warehouse and raw files written by commit 0cbdf6e (the fixture, built by
`fixtures/schema_0cbdf6e/make_fixture.py` from that commit's own code) upgrade in place: every row of every table
survives, the upgraded schema is the schema a new warehouse gets, the old raw files load, a raw file written before
a column existed loads with NULL in it, and the pipeline then runs on the upgraded file."""

from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import polars as pl
import pytest

from kalshi_shadow.decisions.engine import cash_mismatches, decide, settle
from kalshi_shadow.decisions.rulesets import load_rule_sets
from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
from kalshi_shadow.raw import RAW_TABLES
from kalshi_shadow.raw.store import write_batch_atomically
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.contracts import refresh_contracts
from kalshi_shadow.warehouse.ddl import current_version, ensure_schema, latest_version
from kalshi_shadow.warehouse.loader import load_new_files

FIXTURE = Path(__file__).parent / "fixtures" / "schema_0cbdf6e"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())


def _load_fixture_builder():
    """make_fixture.py (stdlib and duckdb only at import): its checksum is the one the manifest was computed with."""
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


table_checksum = _load_fixture_builder().table_checksum


def _schema(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    rows = conn.execute("""SELECT table_name, column_name, data_type FROM information_schema.columns
                           WHERE table_schema = 'main' ORDER BY table_name, ordinal_position""").fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for t, c, d in rows:
        out.setdefault(t, []).append((c, d))
    return out


def _old_rows(table: str) -> set[tuple]:
    old = duckdb.connect(str(FIXTURE / "warehouse.duckdb"), read_only=True)
    try:
        return set(old.execute(f"SELECT * FROM {table}").fetchall())
    finally:
        old.close()


def _known_without_errors() -> set[str]:
    """Contracts of the fixture with an outcome read but no model error recorded (and priced snapshots)."""
    old = duckdb.connect(str(FIXTURE / "warehouse.duckdb"), read_only=True)
    try:
        return {t for (t,) in old.execute("""
            SELECT DISTINCT c.ticker FROM kalshi_contracts AS c JOIN kalshi_edge_snapshots AS s USING (ticker)
            WHERE c.outcome IS NOT NULL AND c.outcome <> 'void' AND s.p_model IS NOT NULL
              AND c.ticker NOT IN (SELECT ticker FROM kalshi_model_errors)""").fetchall()}
    finally:
        old.close()


@pytest.fixture
def upgraded(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, Path]:
    shutil.copy(FIXTURE / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    shutil.copytree(FIXTURE / "raw", tmp_path / "raw")
    conn = utc(duckdb.connect(str(tmp_path / "warehouse.duckdb")))
    assert current_version(conn) == 0  # made before migrations were recorded
    applied = ensure_schema(conn)
    assert [m.version for m in applied] == list(range(1, latest_version() + 1))
    yield conn, tmp_path
    conn.close()


def test_every_row_of_the_old_warehouse_survives_the_upgrade(upgraded) -> None:
    conn, _ = upgraded
    views = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    # What each table held, recomputed over its original columns: unchanged. The watermarks of the decisions'
    # frontiers moved into their own state table (checked below), so that table is compared without them.
    for table, info in MANIFEST["tables"].items():
        columns = [c for c in info["columns"] if [table, c[0]] not in (["kalshi_edge_snapshot_scores", "scored_at"],)]
        if table == "asset_watermarks":
            old = {k: v for k, v in conn.execute("SELECT asset, value FROM asset_watermarks").fetchall()}
            assert not any(k.startswith("kalshi_would_trades.frontier_us:") for k in old)
            continue
        if table == "kalshi_edge_snapshot_scores":  # now a view of snapshots and outcomes: the same rows, derived
            assert table in views
            got = table_checksum(conn, table, columns)
            want_rows = info["rows"]
            assert int(got.split(":")[0]) == want_rows
            continue
        if table == "kalshi_model_errors":  # contracts whose outcome was read after their last decisions get theirs
            old = _old_rows(table)
            new = set(conn.execute("SELECT * FROM kalshi_model_errors").fetchall())
            assert old <= new and {t for t, *_ in new - old} == _known_without_errors()
            continue
        assert table_checksum(conn, table, columns) == info["checksum"], table
    for view, info in MANIFEST["views"].items():
        assert view in views
        if view != "kalshi_edges":  # its rows depend on the wall clock (the last day of snapshots)
            assert conn.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0] == info["rows"], view


def test_scores_derived_by_the_view_equal_the_rows_that_were_stored(upgraded, tmp_path: Path) -> None:
    """The stored score rows of 0cbdf6e, read from the fixture file itself, are what the view now derives."""
    conn, _ = upgraded
    old = duckdb.connect(str(FIXTURE / "warehouse.duckdb"), read_only=True)
    cols = "snapshot_id, outcome, y, p_model, p_mid, brier_model, logloss_model, brier_mid, logloss_mid, pnl_yes, pnl_no, ev_yes, ev_no, excluded_reason"
    try:
        stored = old.execute(f"SELECT {cols} FROM kalshi_edge_snapshot_scores ORDER BY snapshot_id").fetchall()
    finally:
        old.close()
    derived = conn.execute(f"SELECT {cols} FROM kalshi_edge_snapshot_scores ORDER BY snapshot_id").fetchall()
    assert len(derived) == len(stored) > 1000
    assert derived == stored


def test_the_decisions_state_is_rebuilt_from_the_log(upgraded) -> None:
    conn, _ = upgraded
    old = duckdb.connect(str(FIXTURE / "warehouse.duckdb"), read_only=True)
    try:
        frontiers = dict(old.execute("""SELECT substr(asset, 33), value FROM asset_watermarks
                                        WHERE starts_with(asset, 'kalshi_would_trades.frontier_us:')""").fetchall())
        takes = dict(old.execute("SELECT rule_set_version, count(*) FROM kalshi_would_trades WHERE action = 'take' GROUP BY 1").fetchall())
    finally:
        old.close()
    state = {v: (int(f.timestamp() * 1e6), replaying) for v, f, replaying in conn.execute(
        "SELECT rule_set_version, frontier_ts, replaying FROM kalshi_decision_state").fetchall()}
    assert frontiers and state == {v: (f, False) for v, f in frontiers.items()}
    assert dict(conn.execute("SELECT rule_set_version, count(*) FROM kalshi_decision_positions GROUP BY 1").fetchall()) == takes
    assert cash_mismatches(conn) == {}


def test_the_upgraded_schema_is_the_schema_of_a_new_warehouse(upgraded, tmp_path: Path) -> None:
    conn, _ = upgraded
    fresh = utc(duckdb.connect(str(tmp_path / "fresh.duckdb")))
    ensure_schema(fresh)
    assert _schema(conn) == _schema(fresh)
    assert ensure_schema(conn) == [] and current_version(conn) == latest_version()  # nothing applied twice
    fresh.close()


def test_old_raw_files_load_and_a_file_from_before_a_column_existed_gets_null(upgraded) -> None:
    conn, tmp_path = upgraded
    raw = tmp_path / "raw"
    # A series file as a collector from before scheduled fee changes wrote it: no effective_ts, no fee_change_id.
    old = pl.DataFrame({"ts": [datetime(2026, 6, 2, 1, 30, tzinfo=timezone.utc)], "series_ticker": ["KXBTCD"],
                        "title": ["Bitcoin daily"], "fee_type": ["quadratic"], "fee_multiplier": [1.0], "raw_json": ["{}"]})
    write_batch_atomically(old, raw / "kalshi_series" / "date=2026-06-02", "20260602T013000000000-oldser-000001")
    expected = {}
    for f in MANIFEST["raw_unloaded"]:
        expected[f["table"]] = expected.get(f["table"], 0) + f["rows"]
    expected["kalshi_series"] += 1
    for table in RAW_TABLES:
        res = load_new_files(conn, raw, table, now=datetime(2026, 6, 2, 2, tzinfo=timezone.utc))
        assert res.failed_files == [], table
        assert res.rows + res.duplicates == expected.get(table, 0), table
    assert conn.execute("SELECT count(*) FROM raw_file_failures").fetchall()[0][0] == MANIFEST["tables"]["raw_file_failures"]["rows"]
    assert conn.execute("""SELECT effective_ts, fee_change_id, fee_type FROM kalshi_series s JOIN raw_file_loads l USING (load_id)
                           WHERE l.writer = 'oldser'""").fetchall() == [(None, None, "quadratic")]


def test_the_pipeline_runs_on_the_upgraded_warehouse(upgraded) -> None:
    """Inserts into every rebuilt table work: load, price, decide (the old versions and a new one), settle."""
    conn, tmp_path = upgraded
    for table in RAW_TABLES:
        load_new_files(conn, tmp_path / "raw", table, now=datetime(2026, 6, 2, 2, tzinfo=timezone.utc))
    refresh_contracts(conn)
    refresh_spot(conn)
    before = conn.execute("SELECT count(*) FROM kalshi_edge_snapshots").fetchall()[0][0]
    run = price_new_quotes(conn, lot=100)
    assert run.duplicates == 0
    assert conn.execute("SELECT count(*) FROM kalshi_edge_snapshots").fetchall()[0][0] == before + run.rows
    for rs in load_rule_sets():
        decide(conn, rs)
    settle(conn)
    assert cash_mismatches(conn) == {}
    # A rule set the old warehouse never saw replays its whole history next to the others.
    path = tmp_path / "rules.toml"
    path.write_text((Path(load_rule_sets.__code__.co_filename).with_name("rules.toml")).read_text().replace("min_ev = 0.03", "min_ev = 0.02"))
    edited = next(rs for rs in load_rule_sets(path) if rs.name == "careful")
    decide(conn, edited)
    n, first = conn.execute("SELECT count(*), min(decided_ts) FROM kalshi_would_trades WHERE rule_set_version = ?",
                            [edited.version]).fetchall()[0]
    assert n > 0 and first < datetime(2026, 6, 1, 1, tzinfo=timezone.utc) + timedelta(hours=1)
