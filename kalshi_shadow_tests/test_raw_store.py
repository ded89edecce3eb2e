"""The raw store only ever exposes whole files, and a killed writer's leftovers are swept."""

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from kalshi_shadow.raw import RawWriter, list_raw_files
from kalshi_shadow.raw.store import PARTIAL_SUFFIX, sweep_partials


def _tick(seq: int) -> dict:
    return {"ts": datetime.now(timezone.utc), "product_id": "BTC-USD", "sequence": seq, "price": Decimal("95000.12345678")}


def test_flush_by_rows_keeps_decimals_exact(tmp_path: Path) -> None:
    w = RawWriter(tmp_path, "spot_ticks", flush_rows=3, flush_seconds=3600)
    assert w.append(_tick(1)) is None and w.append(_tick(2)) is None
    path = w.append(_tick(3))
    assert path is not None and path.suffix == ".parquet"
    df = pl.read_parquet(list_raw_files(tmp_path, "spot_ticks"))
    assert df["sequence"].to_list() == [1, 2, 3]
    assert df["price"].to_list() == [Decimal("95000.12345678")] * 3
    assert w.rows_flushed == 3 and w.pending == 0


def test_flush_by_age(tmp_path: Path) -> None:
    w = RawWriter(tmp_path, "spot_ticks", flush_rows=10_000, flush_seconds=0.05)
    w.append(_tick(1))
    time.sleep(0.06)
    assert w.maybe_flush() is not None


def test_unknown_column_is_rejected(tmp_path: Path) -> None:
    w = RawWriter(tmp_path, "spot_ticks")
    with pytest.raises(KeyError, match="bogus"):
        w.append({"ts": datetime.now(timezone.utc), "bogus": 1})


def test_partials_are_never_listed_and_stale_ones_are_swept(tmp_path: Path) -> None:
    day = tmp_path / "spot_ticks" / "date=2026-11-24"
    day.mkdir(parents=True)
    partial = day / f"20261124T000000000000-x-000001{PARTIAL_SUFFIX}"
    partial.write_bytes(b"PAR1 half a file")
    assert list_raw_files(tmp_path, "spot_ticks") == []
    assert sweep_partials(tmp_path, "spot_ticks", older_than_seconds=3600) == 0  # fresh: a live writer may own it
    old = time.time() - 7200
    os.utime(partial, (old, old))
    assert sweep_partials(tmp_path, "spot_ticks", older_than_seconds=3600) == 1
    assert not partial.exists()


def test_writer_killed_mid_stream_leaves_only_readable_files(tmp_path: Path) -> None:
    """SIGKILL a process that flushes continuously: every listed file reads, and acknowledged rows survive."""
    script = f"""
import sys, time
from datetime import datetime, timezone
from decimal import Decimal
from kalshi_shadow.raw import RawWriter
w = RawWriter({str(tmp_path)!r}, "spot_ticks", flush_rows=200, flush_seconds=60)
seq = 0
while True:
    seq += 1
    if w.append({{"ts": datetime.now(timezone.utc), "product_id": "BTC-USD", "sequence": seq, "price": Decimal("1.5")}}):
        print(w.rows_flushed, flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = 0
    assert proc.stdout is not None
    while acked < 5000:
        acked = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    files = list_raw_files(tmp_path, "spot_ticks")
    df = pl.concat([pl.read_parquet(f) for f in files])
    assert df.height >= acked
    assert df["sequence"].to_list() == list(range(1, df.height + 1))
