"""Collectors over loopback: the simulator's faults survived and counted, trade-id continuity against a scripted
real WebSocket feed, SIGKILL loses nothing acknowledged, the quote poller's rows, errors and signing, and no Dagster/DuckDB."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.server import ServerConnection, serve

from collectors.health import read_health
from collectors.quotes import QuotePoller
from kalshi_shadow.kalshi.auth import KalshiSigner
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.raw import list_raw_files
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow_tests.waiting import wait_for

REPO = Path(__file__).parents[1]
SERIES = ["KXBTC15M", "KXBTCD", "KXBTC"]


def _collector(module: str, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(data_dir / f"{module}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", module, "--data-dir", str(data_dir), *args],
                            cwd=REPO, stdout=log, stderr=log, env={**os.environ, **(env or {})})


def _spot(url: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    return _collector("collectors.spot", data_dir, "--url", url, "--flush-seconds", "0.5", *extra)


FAST = ("--flush-seconds", "0.5", "--silence-seconds", "5")


def _keyed_platform(sim, data_dir: Path, socket: str, keyed: dict[str, str]) -> list[subprocess.Popen]:
    """The three spot venues, one collector of Kalshi's WebSocket (`socket`: its module) signing with `keyed`, and the
    quote poller, as `up` runs them when keyed (fast flushes)."""
    return [
        _collector("collectors.spot", data_dir, "--url", sim.coinbase_ws_url, *FAST),
        _collector("collectors.kraken", data_dir, "--url", sim.kraken_ws_url, *FAST),
        _collector("collectors.bitstamp", data_dir, "--url", sim.bitstamp_ws_url, *FAST),
        _collector(socket, data_dir, "--url", sim.kalshi_ws_url, *FAST, env=keyed),
        _collector("collectors.quotes", data_dir, "--base-url", sim.kalshi_base_url, "--interval", "1", "--status", "active", env=keyed),
    ]


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def _health(data_dir: Path, name: str) -> dict:
    return read_health(data_dir).get(name, {})


def _rows(data_dir: Path, table: str) -> pl.DataFrame:
    files = list_raw_files(data_dir / "raw", table)
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


# ---- spot: the simulator's faults ----------------------------------------------------------------------------------
def test_spot_collector_survives_drops_malformed_and_silence(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path, "--silence-seconds", "2")
    try:
        wait_for(lambda: _health(tmp_path, "spot").get("rows_acknowledged", 0) > 20)
        sim.faults(drop_ws=1)
        wait_for(lambda: _health(tmp_path, "spot").get("reconnects", 0) >= 1)
        sim.faults(malformed_ws=4)
        wait_for(lambda: _health(tmp_path, "spot").get("errors", {}).get("malformed", 0) >= 4)
        sim.faults(ws_silence_seconds=4)
        wait_for(lambda: _health(tmp_path, "spot").get("errors", {}).get("silence", 0) >= 1, timeout=15)
        before = _health(tmp_path, "spot")["rows_acknowledged"]
        wait_for(lambda: _health(tmp_path, "spot")["rows_acknowledged"] > before + 20)  # still collecting afterwards
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path, "spot")
    assert h["status"] == "stopped" and h["errors"]["malformed"] == 4
    assert h["reconnects"] >= 2 and h["counters"]["heartbeats"] >= 1  # the drop and the silence
    ticks = _rows(tmp_path, "spot_ticks")
    assert ticks.height == h["rows_acknowledged"]
    assert ticks["price"].null_count() == 0 and ticks["trade_id"].is_unique().all()
    assert ticks.schema["price"] == pl.Decimal(18, 8)
    events = _rows(tmp_path, "collector_events")
    assert events.filter(pl.col("kind") == "malformed")["count"].sum() == 4
    assert events.filter(pl.col("kind") == "reconnect")["count"].sum() == h["reconnects"]
    assert events.filter(pl.col("kind") == "silence").height >= 1


# ---- spot: trade-id continuity against a scripted feed -------------------------------------------------------------
class ScriptedFeed:
    """A real WebSocket server on 127.0.0.1 that plays one script per connection, then stays silent.

    `"CLOSE"` in a script closes the connection. Every connection must subscribe first (recorded)."""

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts = scripts
        self.subscribes: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws: ServerConnection) -> None:
        n = len(self.subscribes)
        self.subscribes.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=5)))
        for item in self.scripts[n] if n < len(self.scripts) else []:
            if item == "CLOSE":
                await ws.close()
                return
            await ws.send(item)
        await ws.wait_closed()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def _tick(trade_id: int, price: object = None) -> str:
    """A ticker whose book `sequence` jumps between trades, as on the real feed."""
    return json.dumps({"type": "ticker", "sequence": 1000 + 37 * trade_id, "product_id": "BTC-USD",
                       "trade_id": trade_id, "price": price if price is not None else f"64{trade_id:03d}.12345678",
                       "best_bid": "64000.01",
                       "best_ask": "64000.02", "side": "buy", "time": "2026-07-29T04:00:00.123456Z", "last_size": "0.001"})


def _heartbeat(last_trade_id: int) -> str:
    return json.dumps({"type": "heartbeat", "sequence": 1000 + 37 * last_trade_id + 5,
                       "last_trade_id": last_trade_id, "product_id": "BTC-USD", "time": "2026-07-29T04:00:01Z"})


def test_spot_trade_gaps_out_of_order_reconnect_and_rebase(tmp_path: Path) -> None:
    """Continuity as the reference defines it (docs `exchanges.md`, Coinbase feed): only heartbeats find losses."""
    feed = ScriptedFeed([
        [json.dumps({"type": "subscriptions", "channels": []}), _tick(1), _tick(2),
         _heartbeat(3), _tick(3),  # the heartbeat overtook trade 3's ticker: kept, no gap
         _tick(6),  # a cascade 4..6 batched into one ticker carrying its last trade: no gap
         _heartbeat(6),  # says the same: nothing was lost
         _tick(5),  # out of order: counted, kept
         "{not json", _tick(7, price=64006.5),  # malformed: bad JSON, a number where a decimal string belongs
         json.dumps({"type": "status", "products": []}),  # unknown type: ignored
         json.dumps({"type": "error", "message": "slow consumer", "reason": "test"}),
         _heartbeat(8), _heartbeat(8), _heartbeat(8),  # 7..8 announced, still absent a heartbeat later: one gap, once
         _tick(10),  # a jump past what was recorded missing: a cascade again, no gap
         "CLOSE"],
        [_heartbeat(14), _heartbeat(14),  # the first heartbeat after the reconnect is ahead: 11..14 missed across it
         _tick(15), _tick(19)],  # then silence -> watchdog; the jump 15 -> 19 is a cascade, no gap
        [_tick(2), _tick(3)],  # the feed restarted its trade ids: re-based, not dropped as out of order
    ])
    proc = _spot(feed.url, tmp_path, "--silence-seconds", "1")
    try:
        wait_for(lambda: _health(tmp_path, "spot").get("rows_acknowledged", 0) >= 10, timeout=30)
    finally:
        code = _stop(proc)
        feed.stop()
    assert code == 0
    h = _health(tmp_path, "spot")
    assert (h["gaps"], h["missed_messages"]) == (2, 2 + 4)  # last_trade_id - newest, once per loss
    assert h["errors"]["out_of_order"] == 1 and h["errors"]["rebase"] == 1 and h["errors"]["malformed"] == 2
    assert h["errors"]["exchange_error"] == 1 and h["errors"]["silence"] >= 1 and h["reconnects"] >= 2
    assert h["counters"]["heartbeats"] == 7
    assert all(s == {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]} for s in feed.subscribes)
    assert len(feed.subscribes) >= 3  # resubscribed on every reconnect
    ticks = _rows(tmp_path, "spot_ticks")
    assert ticks["trade_id"].to_list() == [1, 2, 3, 6, 5, 10, 15, 19, 2, 3]  # every ticker kept
    assert ticks["price"][3] == Decimal("64006.12345678")  # exact: never through float
    assert ticks["best_ask_size"].null_count() == ticks.height  # absent is null, not 0
    gaps = _rows(tmp_path, "collector_events").filter(pl.col("kind") == "gap")["detail"].to_list()
    assert sorted(gaps) == ["BTC-USD missed 2 trades: ids 7..8",
                            "BTC-USD missed 4 trades: ids 11..14 across reconnect"]


# ---- spot: SIGKILL ------------------------------------------------------------------------------------------------
def test_spot_collector_killed_mid_write_leaves_whole_files_and_resumes(sim: SimHandle, tmp_path: Path) -> None:
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    wait_for(lambda: _health(tmp_path, "spot").get("files_written", 0) >= 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acknowledged = _health(tmp_path, "spot")["rows_acknowledged"]  # the last record the killed process wrote
    assert _health(tmp_path, "spot")["status"] == "connected"  # no clean exit was recorded
    # A half-written batch, as a kill between write and rename would leave it.
    day = next((tmp_path / "raw" / "spot_ticks").glob("date=*"))
    partial = day / "20990101T000000000000-dead-000001.partial"
    partial.write_bytes(b"PAR1 truncated")
    old = time.time() - 3600
    os.utime(partial, (old, old))
    files = list_raw_files(tmp_path / "raw", "spot_ticks")
    assert partial not in files
    on_disk = sum(pl.read_parquet(f).height for f in files)  # every listed file reads
    assert on_disk >= acknowledged > 0
    proc = _spot(sim.coinbase_ws_url, tmp_path)
    try:
        wait_for(lambda: len(list_raw_files(tmp_path / "raw", "spot_ticks")) > len(files))
        assert not partial.exists()  # swept on restart
    finally:
        assert _stop(proc) == 0


# ---- quotes ---------------------------------------------------------------------------------------------------------
def test_quote_poller_writes_all_series_and_survives_errors(sim: SimHandle, tmp_path: Path) -> None:
    client = KalshiClient(sim.kalshi_base_url, backoff_base=0.01, max_retries=2,
                          on_event=lambda kind, detail: poller.on_client_event(kind, detail))
    poller = QuotePoller(client, SERIES, tmp_path, interval=0.2)
    first = poller.poll_once()
    assert first > 0
    sim.faults(http_5xx=3, http_429=2)
    poller.poll_once()  # the cycle's exchange status gives up after 3 attempts; the first series rides out the rest
    poller.poll_once()
    poller._flush_if_due(force=True)
    errors = poller.health.errors
    assert errors["http_error"] == 3 and errors["rate_limited"] == 2 and errors["poll_failed"] == 1
    assert poller.health.messages == 3 * 3
    status = _rows(tmp_path, "kalshi_exchange_status")  # one per cycle but the failed one: missing, not assumed
    assert status.height == 2 and status["trading_active"].to_list() == [True, True]

    quotes = _rows(tmp_path, "kalshi_quotes")
    assert set(quotes["series_ticker"]) == set(SERIES) and set(quotes["source"]) == {"rest_markets"}
    assert quotes.schema["yes_bid"] == pl.Decimal(18, 4) and quotes.schema["ts"] == pl.Datetime("us", "UTC")
    markets = _rows(tmp_path, "kalshi_markets")
    assert markets["ticker"].n_unique() == markets.height  # metadata only written again on change
    assert set(quotes["ticker"]) <= set(markets["ticker"])
    # An empty side ("0.0000" bid / "1.0000" ask on the wire) is null; a quoted side keeps its exact price.
    wire = markets.select("ticker", "ts", pl.col("raw_json").map_elements(
        lambda s: json.loads(s)["yes_bid_dollars"], return_dtype=pl.String).alias("wire_bid"))
    # the quote observed in the same response (page) as the metadata: received together, its request sent before
    joined = quotes.join(wire.rename({"ts": "received_ts"}), on=["ticker", "received_ts"])
    assert (joined["ts"] < joined["received_ts"]).all()
    assert joined.height == markets.height >= first
    empty = joined.filter(pl.col("wire_bid").cast(pl.Decimal(18, 4)) == 0)
    quoted = joined.filter(pl.col("wire_bid").cast(pl.Decimal(18, 4)) > 0)
    assert empty.height > 0 and quoted.height > 0
    assert empty["yes_bid"].null_count() == empty.height and empty["yes_bid_size"].null_count() == empty.height
    assert (quoted["yes_bid"] == quoted["wire_bid"].cast(pl.Decimal(18, 4))).all()
    assert quotes.filter((pl.col("yes_bid") == 0) | (pl.col("yes_ask") == 1)).height == 0

    series = _rows(tmp_path, "kalshi_series")
    assert sorted(series["series_ticker"]) == sorted(SERIES) and set(series["fee_type"]) == {"quadratic"}
    events = _rows(tmp_path, "collector_events")
    assert events.filter(pl.col("kind") == "http_error")["count"].sum() == 3
    assert events.filter(pl.col("kind") == "poll_failed")["detail"].str.contains("exchange status").all()


def test_quote_poller_counts_rejected_signatures_and_keeps_going(sim: SimHandle, tmp_path: Path) -> None:
    wrong_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = KalshiClient(sim.kalshi_base_url, signer=KalshiSigner("test-key", wrong_key), max_retries=1)
    poller = QuotePoller(client, SERIES, tmp_path, interval=0.1)
    poller.run(seconds=1.5)  # several cycles (7 signed requests each): every one is refused with 401, none crashes the loop
    h = _health(tmp_path, "quotes")
    assert h["status"] == "stopped" and h["counters"]["cycles"] >= 2
    # series and markets per series, and the exchange status, every cycle
    assert h["rows_acknowledged"] == 0 and h["errors"]["poll_failed"] == (2 * 3 + 1) * h["counters"]["cycles"]
    assert "authentication_error" in " ".join(_rows(tmp_path, "collector_events")["detail"])


def test_quote_collector_process_signs_requests_and_exits_cleanly(sim: SimHandle, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    key_file = tmp_path / "kalshi.pem"
    key_file.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    env = {"KALSHI_API_KEY_ID": "test-key", "KALSHI_PRIVATE_KEY_PATH": str(key_file)}
    proc = _collector("collectors.quotes", tmp_path, "--base-url", sim.kalshi_base_url, "--interval", "0.5", env=env)
    try:
        wait_for(lambda: _health(tmp_path, "quotes").get("counters", {}).get("cycles", 0) >= 3)
    finally:
        assert _stop(proc) == 0
    h = _health(tmp_path, "quotes")
    assert h["status"] == "stopped" and h["signed"] is True
    assert "poll_failed" not in h["errors"]  # the simulator verified every signature
    assert h["rows_acknowledged"] == _rows(tmp_path, "kalshi_quotes").height > 0
    assert h["series_rows_acknowledged"] == 3
    assert "test-key" not in (tmp_path / "collectors.quotes.log").read_text()  # no secrets in the log


@pytest.mark.parametrize("module", ["collectors.spot", "collectors.quotes"])
def test_collector_config_errors_exit_with_a_clear_message(tmp_path: Path, module: str) -> None:
    env = {**os.environ, "KALSHI_API_KEY_ID": "only-the-id"}
    env.pop("KALSHI_PRIVATE_KEY_PATH", None)
    out = subprocess.run([sys.executable, "-m", module, "--data-dir", str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "KALSHI_PRIVATE_KEY_PATH" in out.stderr and "Traceback" not in out.stderr


def test_collectors_never_import_dagster_or_duckdb() -> None:
    code = ("import sys, collectors.spot, collectors.quotes, collectors.health; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'duckdb', 'dagster_duckdb')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
