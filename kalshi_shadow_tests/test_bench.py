"""The bench's own arithmetic: busy-day sizing, CPU accounting over process trees, and the recompute children."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kalshi_shadow import bench
from kalshi_shadow.models import model_names


def test_busy_day_scales_quotes_by_the_factor():
    base = bench.Day("1x", 50, 5)
    busy = bench.busy_day(base, 10)
    assert (busy.strikes, busy.quote_every) == (100, 1)
    assert busy.strikes / busy.quote_every == 10 * base.strikes / base.quote_every
    assert bench.busy_day(base, 1) == bench.Day("1x", 50, 5)


def test_tree_ticks_sums_live_descendants_including_reaped_children():
    # pid: (ppid, own ticks, own + reaped children's ticks)
    table = {10: (1, 5, 7), 11: (10, 3, 3), 12: (11, 2, 4), 20: (1, 100, 100)}
    assert bench._tree_ticks(10, table) == 7 + 3 + 4
    assert bench._tree_ticks(12, table) == 4
    assert bench._tree_ticks(99, table) is None


def test_cpu_meter_measures_real_processes_and_counts_a_restarted_child_from_zero(tmp_path):
    """Two real children, each burning 0.4 CPU-seconds, the second a 'restart' started inside the window."""
    burn = [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(60)"]
    state = tmp_path / "up.json"

    def record(pid: int) -> None:
        state.write_text(json.dumps({"pid": os.getpid(), "children": {"sim": {"pid": pid, "alive": True}}}))

    first = subprocess.Popen(burn)
    second = None
    try:
        record(first.pid)
        meter = bench.CpuMeter(state)
        meter.sample()  # window start: the first child has barely started
        time.sleep(1.5)
        meter.sample()
        first.kill()
        first.wait()
        second = subprocess.Popen(burn)
        record(second.pid)
        time.sleep(1.5)
        meter.sample()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert 0.7 <= meter.seconds()["sim"] <= 1.6  # ~0.4 burnt by each, plus the second's interpreter start
    assert meter.pids()["sim"] == 2


def test_recompute_children_reprice_the_whole_generated_day(tmp_path):
    db = str(tmp_path / "day.duckdb")
    gen = bench._child(["_generate", "--db", db, "--strikes", "2", "--quote-every", "60"])
    res = bench._child(["_recompute", "--db", db])
    assert gen["quotes"] > 0
    assert res["quotes"] == gen["quotes"]
    assert res["rows"] == len(model_names()) * gen["quotes"]
    assert res["duplicates"] == 0
    assert res["peak_rss_mib"] >= res["rss_before_mib"] > 0
