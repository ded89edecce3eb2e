"""Collectors against the simulator over loopback: faults survived and counted, SIGKILL loses nothing acknowledged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from collectors.health import read_health
from collectors.quotes import QuotePoller
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.raw import list_raw_files
from kalshi_shadow.sim.server import SimHandle

REPO = Path(__file__).parents[1]


def _spot(url: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collectors.spot", "--url", url, "--data-dir", str(data_dir), "--flush-seconds", "0.5", *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(predicate, timeout: float = 20.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def _health(data_dir: Path, name: str) -> dict:
    return read_health(data_dir).get(name, {})


def _rows(data_dir: Path, table: str) -> pl.DataFrame:
    files = list_raw_files(data_dir / "raw", table)
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def test_spot_collector_survives_drops_malformed_and_silence(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path, "--silence-seconds", "2")
    try:
        _wait(lambda: _health(tmp_path, "spot").get("rows_acknowledged", 0) > 20)
        sim.faults(drop_ws=1)
        _wait(lambda: _health(tmp_path, "spot").get("reconnects", 0) >= 1)
        sim.faults(malformed_ws=4)
        _wait(lambda: _health(tmp_path, "spot").get("errors", {}).get("malformed", 0) >= 4)
        sim.faults(ws_silence_seconds=4)
        _wait(lambda: _health(tmp_path, "spot").get("errors", {}).get("silence", 0) >= 1, timeout=15)
        before = _health(tmp_path, "spot")["rows_acknowledged"]
        _wait(lambda: _health(tmp_path, "spot")["rows_acknowledged"] > before + 20)  # still collecting afterwards
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    h = _health(tmp_path, "spot")
    assert h["status"] == "stopped" and h["errors"]["malformed"] == 4
    ticks = _rows(tmp_path, "spot_ticks")
    assert ticks.height == h["rows_acknowledged"]
    assert ticks["price"].null_count() == 0 and ticks["sequence"].is_unique().all()
    events = _rows(tmp_path, "collector_events")
    assert events.filter(pl.col("kind") == "malformed")["count"].sum() == 4
    assert events.filter(pl.col("kind") == "reconnect").height >= 1


def test_spot_collector_killed_mid_write_leaves_whole_files_and_resumes(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    _wait(lambda: _health(tmp_path, "spot").get("files_written", 0) >= 4)
    acknowledged = _health(tmp_path, "spot")["rows_acknowledged"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A half-written batch, as a kill between write and rename would leave it.
    day = next((tmp_path / "raw" / "spot_ticks").glob("date=*"))
    partial = day / "20990101T000000000000-dead-000001.partial"
    partial.write_bytes(b"PAR1 truncated")
    old = time.time() - 3600
    os.utime(partial, (old, old))
    files = list_raw_files(tmp_path / "raw", "spot_ticks")
    assert partial not in files
    on_disk = sum(pl.read_parquet(f).height for f in files)  # every listed file reads
    assert on_disk >= acknowledged
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    try:
        _wait(lambda: len(list_raw_files(tmp_path / "raw", "spot_ticks")) > len(files))
        assert not partial.exists()  # swept on restart
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_quote_poller_writes_all_series_and_survives_errors(sim: SimHandle, tmp_path: Path) -> None:
    events: list[str] = []
    client = KalshiClient(sim.kalshi_base_url, backoff_base=0.01, max_retries=2, on_event=lambda k, d: events.append(k))
    poller = QuotePoller(client, ["KXBTC15M", "KXBTCD", "KXBTC"], tmp_path, interval=0.2)
    assert poller.poll_once() > 0
    sim.faults(http_5xx=3, http_429=2)
    poller.poll_once()  # one series gives up after retries; the cycle goes on
    poller.poll_once()
    poller._flush_if_due(force=True)
    assert events.count("http_error") == 3 and events.count("rate_limited") == 2
    quotes = _rows(tmp_path, "kalshi_quotes")
    assert set(quotes["series_ticker"]) == {"KXBTC15M", "KXBTCD", "KXBTC"}
    # An empty side is null, never 0 or 1.
    assert quotes.filter(pl.col("yes_bid") == 0).height == 0 and quotes.filter(pl.col("yes_ask") == 1).height == 0
    assert quotes["yes_bid"].null_count() > 0
    markets = _rows(tmp_path, "kalshi_markets")
    assert markets["ticker"].n_unique() == markets.height  # metadata only written again on change
    assert json.loads(markets["raw_json"][0])["ticker"] == markets["ticker"][0]
    series = _rows(tmp_path, "kalshi_series")
    assert set(series["series_ticker"]) == {"KXBTC15M", "KXBTCD", "KXBTC"} and set(series["fee_type"]) == {"quadratic"}


def test_collectors_never_import_dagster_or_duckdb() -> None:
    code = "import sys, collectors.spot, collectors.quotes; print(sorted(m for m in ('dagster', 'duckdb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
