"""Issue 10: health checks that see a dead or degraded feed. A real spot collector against the simulator's fault
switches, raw files loaded by the real ingest asset, and the checks run as a real Dagster check-only job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import httpx
import pytest

from kalshi_shadow.defs import ingest
from kalshi_shadow.defs.alerts import AlertDestinations, alert_on_failed_checks
from kalshi_shadow.defs.health import health_job, platform_health, platform_health_asset
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.monitoring.health import SPECS, collector_liveness, error_rates
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import connect
from kalshi_shadow_tests.waiting import wait_for
from kalshi_shadow_tests.webhook import Receiver

REPO = Path(__file__).parents[1]


def _spot(sim: SimHandle, data_dir: Path) -> subprocess.Popen:
    log = open(data_dir / "spot.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "collectors.spot", "--data-dir", str(data_dir), "--url", sim.coinbase_ws_url,
                             "--flush-seconds", "0.3"], cwd=REPO, stdout=log, stderr=log, env=dict(os.environ))


def _faults(sim: SimHandle, **faults) -> None:
    assert httpx.post(sim.kalshi_base_url.split("/trade-api")[0] + "/_sim/faults", json=faults).status_code == 200


def _spot_alive(data_dir: Path, silent_seconds: float) -> bool:
    return next(f for f in collector_liveness(data_dir, datetime.now(timezone.utc), silent_seconds)
                if f.check == "spot_collector_alive").passed


def test_a_silenced_spot_feed_fails_liveness_and_recovers(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim, tmp_path)
    try:
        wait_for(lambda: _spot_alive(tmp_path, 3.0), 20, what="the spot collector hearing from the feed")
        _faults(sim, ws_silence_seconds=8)
        wait_for(lambda: not _spot_alive(tmp_path, 3.0), 10, what="liveness to fail while the feed is silent")
        wait_for(lambda: _spot_alive(tmp_path, 3.0), 30, what="liveness to recover once the feed speaks again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    # A collector that is not running at all (no health record for quotes here) is an ERROR, not a pass.
    quotes = next(f for f in collector_liveness(tmp_path, datetime.now(timezone.utc)) if f.check == "quotes_collector_alive")
    assert not quotes.passed and quotes.severity == "ERROR"


def test_a_burst_of_malformed_messages_fails_the_error_rate_check(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim, tmp_path)
    try:
        wait_for(lambda: _spot_alive(tmp_path, 3.0), 20, what="the spot collector")
        _faults(sim, malformed_ws=25)
        wait_for(lambda: (tmp_path / "health" / "spot.json").read_text().count('"malformed"') and
                 '"malformed": 25' in (tmp_path / "health" / "spot.json").read_text(), 20, what="25 malformed messages counted")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    loaded = dg.materialize([a for a in ingest.raw_assets if a.key.path == ["collector_events"]], resources={"warehouse": wh})
    assert loaded.success  # the load's metadata carries the counts as numbers the asset page plots over time
    assert loaded.asset_materializations_for_node("collector_events")[0].metadata["events_malformed"].value == 25
    conn = connect(wh.database)
    try:
        rates = {f.check: f for f in error_rates(conn, datetime.now(timezone.utc))}
    finally:
        conn.close()
    assert not rates["error_rates"].passed and rates["error_rates"].metadata["malformed_15min"] == 25
    assert "malformed 25" in rates["error_rates"].description


def test_the_check_only_job_evaluates_every_check_in_dagster(tmp_path: Path) -> None:
    """No data and no collectors: the job runs (checks only, nothing materialized) and says the platform is blind."""
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    defs = dg.Definitions(assets=[*ingest.raw_assets, platform_health_asset], asset_checks=[platform_health], jobs=[health_job], resources={"warehouse": wh})
    result = defs.resolve_job_def("health_job").execute_in_process()
    assert result.success
    evals = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(evals) == {name for _, name, _ in SPECS}
    assert not result.get_asset_materialization_events()
    for name in ("quotes_collector_alive", "quotes_fresh", "index_fresh"):  # blind
        assert not evals[name].passed and evals[name].severity == dg.AssetCheckSeverity.ERROR
    for name in ("spot_collector_alive", "kraken_collector_alive", "bitstamp_collector_alive", "spot_fresh"):  # one venue: degraded
        assert not evals[name].passed and evals[name].severity == dg.AssetCheckSeverity.WARN
    assert evals["prices_sane"].passed and evals["error_rates"].passed


@pytest.mark.slow
def test_a_silenced_feed_reaches_a_person_once_and_so_does_its_recovery(sim: SimHandle, tmp_path: Path) -> None:
    """Collector -> health record -> the scheduled check job -> the alert sensor -> Apprise -> a webhook on loopback."""
    receiver = Receiver()
    instance = dg.DagsterInstance.ephemeral()
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    job = dg.Definitions(assets=[*ingest.raw_assets, platform_health_asset], asset_checks=[platform_health], jobs=[health_job],
                         resources={"warehouse": wh}).resolve_job_def("health_job")
    alerting = AlertDestinations(urls=receiver.url(), data_dir=str(tmp_path), repeat_minutes=60, backoff_seconds=0.05)
    cursor: list[str | None] = [None]

    def evaluate_and_alert() -> list[str]:
        assert job.execute_in_process(instance=instance, run_config={
            "ops": {"platform_health": {"config": {"collector_silent_seconds": 3.0}}}}).success
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor[0], resources={"alerting": alerting})
        alert_on_failed_checks(ctx)
        cursor[0] = ctx.cursor
        return [m["title"] for m in receiver.accepted if "spot_collector_alive" in m["title"]]

    proc = _spot(sim, tmp_path)
    try:
        evaluate_and_alert()  # the sensor starts at the newest event
        wait_for(lambda: _spot_alive(tmp_path, 3.0), 20, what="the spot collector")
        assert evaluate_and_alert() == []
        _faults(sim, ws_silence_seconds=10)
        wait_for(lambda: not _spot_alive(tmp_path, 3.0), 10, what="the feed to go quiet")
        sent = evaluate_and_alert()
        assert len(sent) == 1 and "degraded" in sent[0]  # one venue down: the index goes on with the others
        assert evaluate_and_alert() == sent  # still silent: the repeat is suppressed
        wait_for(lambda: _spot_alive(tmp_path, 3.0), 30, what="the feed to speak again")
        sent = evaluate_and_alert()
        assert len(sent) == 2 and sent[1].startswith("[RECOVERED]")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        receiver.close()


def test_the_daily_digest_reaches_the_channel_with_every_section(tmp_path: Path) -> None:
    from kalshi_shadow.alerts import AlertSettings, raise_alert
    from kalshi_shadow.defs.health import kalshi_health_digest
    from kalshi_shadow.pricing.snapshots import refresh_spot
    from kalshi_shadow.supervisor import RunDir
    from kalshi_shadow.warehouse.ddl import ensure_schema

    receiver = Receiver()
    try:
        now = datetime.now(timezone.utc)
        hole = now.replace(minute=0, second=0, microsecond=0) - timedelta(minutes=50)  # inside one clock hour
        conn = connect(tmp_path / "w.duckdb")
        ensure_schema(conn)
        # Spot every second for the last 3 hours except a 10-minute hole, and a few collector events.
        conn.execute("""INSERT INTO spot_ticks (ts, received_ts, product_id, sequence, trade_id, price, load_id)
                        SELECT t, t, 'BTC-USD', i, i, 95000, 1 FROM (
                            SELECT i, ?::TIMESTAMPTZ - to_seconds(10800 - i) AS t FROM range(0, 10800) AS r(i))
                        WHERE t NOT BETWEEN ? AND ?""", [now, hole, hole + timedelta(minutes=10)])
        conn.execute("""INSERT INTO raw_writer_progress VALUES ('spot_ticks', 'w', 1, ?, 1, ?, NULL, ?)""", [now, now, now])
        refresh_spot(conn)
        conn.execute("INSERT INTO collector_events VALUES (?, 'spot', 'reconnect', 'eof', 2, 1), (?, 'quotes', 'rate_limited', '429', 7, 1)",
                     [now, now])
        conn.close()
        RunDir(tmp_path).append({"ts": now.isoformat(), "kind": "exit", "child": "collect-spot", "exit_code": -9})
        settings = AlertSettings(data_dir=tmp_path, urls=(receiver.url(),), backoff_seconds=(0.05,))
        raise_alert("check:platform_health:spot_fresh", "ERROR", "platform_health spot_fresh failed", settings=settings)
        wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
        result = dg.materialize([kalshi_health_digest], resources={
            "warehouse": wh, "alerting": AlertDestinations(urls=receiver.url(), data_dir=str(tmp_path), backoff_seconds=0.05)})
        assert result.success
    finally:
        receiver.close()
    digest = receiver.accepted[-1]
    assert "daily digest" in digest["title"] and "needs a look" in digest["title"]
    body = digest["message"]
    for expected in ("Failed checks and runs: 1 (check:platform_health:spot_fresh x1)", "Hours with a spot gap over 60 s: 1",
                     "Restarts: 1 (collect-spot x1)", "quotes rate_limited 7", "spot reconnect 2", "Last settlement read: never",
                     "Decisions"):
        assert expected in body, (expected, body)
    meta = result.asset_materializations_for_node("kalshi_health_digest")[0].metadata
    assert meta["gap_hours"].value == 1 and meta["delivered"].value == "True"
