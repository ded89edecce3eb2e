"""Warehouse loads and the ingest assets, materialized for real on a DuckDB file in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kalshi_shadow.defs import ingest, inline, live
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.raw import RawWriter
from kalshi_shadow.warehouse.connection import open_warehouse
from kalshi_shadow.warehouse.loader import load_new_files

REPO = Path(__file__).parents[1]
NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """Each test writes rows stamped at its own start: freshness checks compare with the wall clock, and a module-level
    time would be minutes old for a test that runs late in the suite."""
    global NOW
    NOW = datetime.now(timezone.utc)


def _market(ticker: str, series: str, strike_type: str = "greater", floor: float | None = 95000.0, **kw) -> dict:
    return {"ts": NOW, "ticker": ticker, "event_ticker": ticker.rsplit("-", 1)[0], "series_ticker": series,
            "market_type": "binary", "status": "active", "strike_type": strike_type, "floor_strike": floor,
            "open_time": NOW - timedelta(minutes=10), "close_time": NOW + timedelta(minutes=50), "raw_json": "{}", **kw}


def _quote(ticker: str, series: str, yes_bid: str | None, yes_ask: str | None) -> dict:
    d = lambda x: Decimal(x) if x is not None else None  # noqa: E731
    return {"ts": NOW, "ticker": ticker, "event_ticker": ticker.rsplit("-", 1)[0], "series_ticker": series, "status": "active",
            "yes_bid": d(yes_bid), "yes_ask": d(yes_ask),
            "no_bid": 1 - d(yes_ask) if yes_ask else None, "no_ask": 1 - d(yes_bid) if yes_bid else None, "source": "rest_markets"}


def _write(raw: Path, table: str, rows: list[dict]) -> None:
    w = RawWriter(raw, table, flush_rows=10**9, flush_seconds=10**9)
    w.extend(rows)
    w.flush()


def _seed_raw(raw: Path) -> None:
    _write(raw, "kalshi_markets", [_market("KXBTCD-26NOV2417-T94999.99", "KXBTCD"),
                                   _market("KXBTC-26NOV2417-B95250", "KXBTC", "between", 95000.0, cap_strike=95499.99),
                                   _market("KXBTC15M-26NOV241515-15", "KXBTC15M", "greater_or_equal", None)])
    _write(raw, "kalshi_series", [{"ts": NOW, "series_ticker": s, "fee_type": "quadratic", "fee_multiplier": 1.0} for s in ("KXBTCD", "KXBTC", "KXBTC15M")])
    _write(raw, "kalshi_quotes", [_quote("KXBTCD-26NOV2417-T94999.99", "KXBTCD", "0.40", "0.43"), _quote("KXBTC-26NOV2417-B95250", "KXBTC", None, "0.05")])
    _write(raw, "spot_ticks", [{"ts": NOW - timedelta(seconds=i), "product_id": "BTC-USD", "sequence": 100 - i, "price": Decimal("95001.5")} for i in range(5)])


def test_loader_loads_each_file_exactly_once(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _seed_raw(raw)
    partial = next((raw / "spot_ticks").glob("date=*")) / "x.partial"
    partial.write_bytes(b"junk")
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        first = load_new_files(conn, raw, "spot_ticks")
        again = load_new_files(conn, raw, "spot_ticks")
        _write(raw, "spot_ticks", [{"ts": NOW, "product_id": "BTC-USD", "sequence": 101, "price": Decimal("95002")}])
        later = load_new_files(conn, raw, "spot_ticks")
        assert (first.files, first.rows, again.files, again.rows, later.files, later.rows) == (1, 5, 0, 0, 1, 1)
        assert conn.execute("SELECT count(*), count(DISTINCT load_id) FROM spot_ticks").fetchone() == (6, 2)
        assert conn.execute("SELECT sum(row_count) FROM raw_file_loads WHERE table_name = 'spot_ticks'").fetchone()[0] == 6


def test_a_failed_load_leaves_nothing_half_loaded(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _seed_raw(raw)
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        # Make the ledger insert fail after the rows went in: the rows must roll back with it.
        conn.execute("ALTER TABLE raw_file_loads ADD COLUMN must_not_be_null INTEGER NOT NULL DEFAULT 1")
        conn.execute("ALTER TABLE raw_file_loads ALTER COLUMN must_not_be_null DROP DEFAULT")
        with pytest.raises(duckdb.Error):
            load_new_files(conn, raw, "kalshi_quotes")
        assert conn.execute("SELECT count(*) FROM kalshi_quotes").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM raw_file_loads").fetchone()[0] == 0


def test_unreadable_file_is_recorded_and_skipped(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _seed_raw(raw)
    day = next((raw / "spot_ticks").glob("date=*"))
    (day / "00000000T000000000000-bad-000001.parquet").write_bytes(b"not parquet at all")
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        res = load_new_files(conn, raw, "spot_ticks")
        assert (res.rows, len(res.failed_files)) == (5, 1)
        assert load_new_files(conn, raw, "spot_ticks").files == 0
        assert conn.execute("SELECT count(*) FROM raw_file_failures").fetchone()[0] == 1


def _materialize(tmp_path: Path) -> dg.ExecuteInJobResult:
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    return dg.materialize([*ingest.raw_assets, ingest.kalshi_contracts], resources={"warehouse": wh})


def test_ingest_assets_build_contracts_and_keep_settlements(tmp_path: Path) -> None:
    _seed_raw(tmp_path / "raw")
    result = _materialize(tmp_path)
    assert result.success
    meta = result.asset_materializations_for_node("kalshi_quotes")[0].metadata
    assert meta["rows"].value == 2 and meta["min_ts"].value == NOW.isoformat()
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"no_unreadable_raw_files": True, "newest_row_is_recent": True, "quotes_are_consistent": True,
                      "contracts_have_terms": True, "fee_schedule_unchanged": True}
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        rows = conn.execute("SELECT ticker, series_ticker, strike_type, cap_strike, fee_type, fee_multiplier FROM kalshi_contracts ORDER BY 1").fetchall()
        assert rows == [("KXBTC-26NOV2417-B95250", "KXBTC", "between", 95499.99, "quadratic", 1.0),
                        ("KXBTC15M-26NOV241515-15", "KXBTC15M", "greater_or_equal", None, "quadratic", 1.0),
                        ("KXBTCD-26NOV2417-T94999.99", "KXBTCD", "greater", None, "quadratic", 1.0)]
        conn.execute("UPDATE kalshi_contracts SET outcome = 'yes', settlement_value = 1 WHERE ticker = 'KXBTCD-26NOV2417-T94999.99'")
    # The 15M strike becomes known later; a re-derive updates terms but never the settlement columns.
    _write(tmp_path / "raw", "kalshi_markets", [_market("KXBTC15M-26NOV241515-15", "KXBTC15M", "greater_or_equal", 95123.45),
                                               _market("KXBTCD-26NOV2417-T94999.99", "KXBTCD", status="closed")])
    assert _materialize(tmp_path).success
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert conn.execute("SELECT floor_strike FROM kalshi_contracts WHERE ticker LIKE 'KXBTC15M%'").fetchone()[0] == 95123.45
        assert conn.execute("SELECT status, outcome, settlement_value FROM kalshi_contracts WHERE ticker LIKE 'KXBTCD%'").fetchone() == ("closed", "yes", 1)


def test_quote_consistency_check_fails_on_crossed_quotes(tmp_path: Path) -> None:
    _seed_raw(tmp_path / "raw")
    _write(tmp_path / "raw", "kalshi_quotes", [_quote("KXBTCD-26NOV2417-T94999.99", "KXBTCD", "0.60", "0.55")])
    result = _materialize(tmp_path)
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "quotes_are_consistent")
    assert not check.passed and check.metadata["crossed"].value == 1


def test_live_sensor_runs_one_live_run_for_today_only_for_new_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    ctx = dg.build_sensor_context(instance=instance)
    assert isinstance(live.live_tick_sensor(ctx), dg.SkipReason)
    assert not instance.get_runs()
    _seed_raw(tmp_path / "raw")
    # The warehouse is free: the sensor executes the live run itself (no process to launch) and says so.
    ctx = dg.build_sensor_context(instance=instance)
    result = live.live_tick_sensor(ctx)
    assert isinstance(result, dg.SkipReason) and "ran in the sensor and succeeded" in result.skip_message, result
    (run,) = instance.get_runs()
    today = datetime.now(timezone.utc).date().isoformat()
    assert run.job_name == "live_job" and run.status == dg.DagsterRunStatus.SUCCESS and run.run_id[:8] in result.skip_message
    assert run.tags["dagster/partition"] == today and run.tags["kalshi_shadow/trigger"] == "live" and run.tags[inline.INLINE_TAG] == "yes"
    assert run.tags["dagster/sensor_name"] == "live_tick_sensor"  # the UI: launched by the sensor
    assert instance.get_latest_materialization_event(dg.AssetKey("kalshi_quotes")).run_id == run.run_id
    # The run held the database open from step to step (Warehouse.hold_open) and let go at its end: another process
    # can open it now.
    other = subprocess.run([sys.executable, "-c", "import duckdb, sys; print(duckdb.connect(sys.argv[1]).execute("
                            "'SELECT count(*) FROM kalshi_quotes').fetchone()[0])", str(tmp_path / "warehouse.duckdb")],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and int(other.stdout) > 0, other.stderr[-500:]
    cursor = json.loads(ctx.cursor)
    assert set(cursor) == {"kalshi_markets", "kalshi_series", "kalshi_quotes", "spot_ticks"}
    ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
    assert isinstance(live.live_tick_sensor(ctx2), dg.SkipReason) and len(instance.get_runs()) == 1
    # Another run holds (or may take) the warehouse: the live run is requested and queues behind it instead.
    _write(tmp_path / "raw", "spot_ticks", [{"ts": NOW, "product_id": "BTC-USD", "sequence": 200, "price": Decimal("1")}])
    instance.add_run(dg.DagsterRun(job_name="settlements_job", run_id="0" * 8 + "-busy", status=dg.DagsterRunStatus.STARTED))
    req = live.live_tick_sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor))
    assert isinstance(req, dg.RunRequest) and req.run_key.startswith("live:") and req.partition_key == today
    assert req.tags == {"kalshi_shadow/trigger": "live", inline.INLINE_TAG: "no"}


def test_an_inline_live_run_whose_process_died_is_failed_and_does_not_block_the_next_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    _seed_raw(tmp_path / "raw")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that has ended: the code server killed mid-run
    instance = dg.DagsterInstance.ephemeral()
    instance.add_run(dg.DagsterRun(job_name="live_job", run_id="dead0000-inline", status=dg.DagsterRunStatus.STARTED,
                                   tags={inline.INLINE_TAG: "yes", inline.PID_TAG: str(gone.pid)}))
    result = live.live_tick_sensor(dg.build_sensor_context(instance=instance))
    assert "ran in the sensor and succeeded" in result.skip_message, result
    assert instance.get_run_by_id("dead0000-inline").status == dg.DagsterRunStatus.FAILURE
    # a live run still going in a live process is waited for
    instance.add_run(dg.DagsterRun(job_name="live_job", run_id="live0000-inline", status=dg.DagsterRunStatus.STARTED,
                                   tags={inline.INLINE_TAG: "yes", inline.PID_TAG: str(os.getpid())}))
    _write(tmp_path / "raw", "spot_ticks", [{"ts": NOW, "product_id": "BTC-USD", "sequence": 300, "price": Decimal("1")}])
    assert "still going" in live.live_tick_sensor(dg.build_sensor_context(instance=instance)).skip_message


def test_live_sensor_requests_the_run_when_inline_runs_are_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KALSHI_SHADOW_INLINE_RUNS", "0")
    _seed_raw(tmp_path / "raw")
    instance = dg.DagsterInstance.ephemeral()
    assert isinstance(live.live_tick_sensor(dg.build_sensor_context(instance=instance)), dg.RunRequest)
    assert not instance.get_runs()


def test_definitions_validate() -> None:
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
