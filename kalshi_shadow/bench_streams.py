"""`kalshi-shadow bench streams`: the book stream against REST polling on one simulator run.

Both collectors run as real processes against one simulator (fast clock, simulated keys), each in its own data
directory so the poller does not stand by. The simulator's maker requotes on whole seconds, so its book changes at a
known instant: second s. For every change of a market's top of book (prices and sizes), each source's delay is the
receive time of its first row showing that top, minus s. A poll that comes after the book changed again never shows
it: that change is counted as missed by polling. Figures: median and p95 delay per source (the stream's target is
under 1 s), the share of changes seen, rows per minute, and each collector's CPU.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kalshi_shadow.raw import list_raw_files
from kalshi_shadow.raw.store import RawFileName
from kalshi_shadow.sim.server import SimConfig, start_in_thread

TARGET_STREAM_DELAY_S = 1.0
KEY_ID = "bench-key"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rows(data: Path) -> pl.DataFrame:
    """The quote rows, each with its file's flush time (`on_disk`: when it was acknowledged)."""
    frames = []
    for f in list_raw_files(data / "raw", "kalshi_quotes"):
        name = RawFileName.parse(f.name)
        frames.append(pl.read_parquet(f).with_columns(pl.lit(name.flushed_at.timestamp() if name else None).alias("on_disk")))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _top(levels: list) -> tuple:
    return (Decimal(levels[0][0]), Decimal(levels[0][1])) if levels else (None, None)


def _delays(rows: pl.DataFrame, truth: dict[int, tuple], lo: int, hi: int) -> tuple[list[float], list[float], int]:
    """(delays to the row's receive time, delays to its file on disk, changes in [lo, hi]) for one market's changes
    this source showed."""
    shown = sorted((r["received_ts"].timestamp(), (r["yes_bid"], r["yes_bid_size"], r["no_bid"], r["yes_ask_size"]), r["on_disk"])
                   for r in rows.iter_rows(named=True))
    delays, disk, changes = [], [], 0
    seconds = sorted(truth)
    for i, s in enumerate(seconds):
        if s < lo or s > hi or truth[s] == truth.get(s - 1):
            continue
        changes += 1
        until = next((t for t in seconds[i + 1:] if truth[t] != truth[s]), s + 3600)  # the book's next change
        seen = next(((t, d) for t, top, d in shown if s <= t < until + 1 and top == truth[s]), None)
        if seen is not None:
            delays.append(seen[0] - s)
            disk.append(seen[1] - s)
    return delays, disk, changes


def run(seconds: float, interval: float, figure, note, section) -> None:
    section(f"5. streams: book stream vs REST polling every {interval:g} s, one simulator run of {seconds:g} s")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sim = start_in_thread(SimConfig(fast=True, api_key_id=KEY_ID, public_key_pem=pem, rate_limit_per_second=50.0))
    with tempfile.TemporaryDirectory(prefix="kalshi-shadow-bench-streams-") as tmp:
        tmp_path = Path(tmp)
        key_file = tmp_path / "key.pem"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        env = {**os.environ, "KALSHI_API_KEY_ID": KEY_ID, "KALSHI_PRIVATE_KEY_PATH": str(key_file), "KALSHI_BASE_URL": sim.kalshi_base_url}
        stream_dir, poll_dir = tmp_path / "stream", tmp_path / "poll"
        procs = {
            "collect-books": subprocess.Popen([sys.executable, "-m", "collectors.books", "--data-dir", str(stream_dir), "--url", sim.kalshi_ws_url],
                                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            "collect-quotes": subprocess.Popen([sys.executable, "-m", "collectors.quotes", "--data-dir", str(poll_dir), "--base-url",
                                                sim.kalshi_base_url, "--interval", str(interval), "--status", "active"],
                                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        }
        try:
            time.sleep(5)  # both connected and listing
            cpu0 = {n: _cpu_seconds(p.pid) for n, p in procs.items()}
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
            cpu1 = {n: _cpu_seconds(p.pid) for n, p in procs.items()}
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(timeout=20)
        stream, poll = _rows(stream_dir), _rows(poll_dir)
        lo, hi = int(t0) + 1, int(t1) - int(interval) - 2
        stats: dict[str, list] = {"stream": [[], []], "polling": [[], []]}
        total = 0
        markets = sorted(set(stream["ticker"]) & set(poll["ticker"]))
        base = sim.kalshi_base_url.split("/trade-api")[0]
        for ticker in markets:
            books = httpx.get(f"{base}/_sim/markets/{ticker}/books", params={"from": lo - 1, "to": int(t1)}).json()["books"]
            truth = {b["second"]: (*_top(b["yes"]), *_top(b["no"])) for b in books}
            n = 0
            for name, rows in (("stream", stream.filter(pl.col("source") == "ws_orderbook")), ("polling", poll)):
                d, on_disk, n = _delays(rows.filter(pl.col("ticker") == ticker), truth, lo, hi)
                stats[name][0] += d
                stats[name][1] += on_disk
            total += n
    sim.stop()
    window = t1 - t0
    note(f"{len(markets)} markets, {total:,} top-of-book changes in {hi - lo} s of the simulator's books")
    for name, (delays, disk) in stats.items():
        if delays:
            q, qd = statistics.quantiles(delays, n=20), statistics.quantiles(disk, n=20)
            target = f"< {TARGET_STREAM_DELAY_S:g} s" if name == "stream" else ""
            figure(f"streams {name}: book change -> quote row seen (received_ts), median",
                   f"{statistics.median(delays):.3f} s (p95 {q[18]:.3f} s)", target)
            figure(f"streams {name}: book change -> its raw file on disk, median", f"{statistics.median(disk):.3f} s (p95 {qd[18]:.3f} s)")
        figure(f"streams {name}: changes seen", f"{len(delays):,} of {total:,} ({100 * len(delays) / max(total, 1):.1f}%)")
    rows_stream = stream.filter((pl.col("received_ts") >= datetime.fromtimestamp(t0, timezone.utc))
                                & (pl.col("received_ts") < datetime.fromtimestamp(t1, timezone.utc))).height
    rows_poll = poll.filter((pl.col("received_ts") >= datetime.fromtimestamp(t0, timezone.utc))
                            & (pl.col("received_ts") < datetime.fromtimestamp(t1, timezone.utc))).height
    figure("streams quote rows/min (stream incl. restated / polling)", f"{rows_stream * 60 / window:,.0f} / {rows_poll * 60 / window:,.0f}")
    for name in procs:
        figure(f"streams CPU {name}", f"{(cpu1[name] - cpu0[name]) / window:.3f} cores")
