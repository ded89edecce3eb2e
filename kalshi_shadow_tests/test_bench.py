"""The bench's own arithmetic: busy-day sizing, CPU accounting over process trees, and the recompute children."""

from __future__ import annotations

import json

from kalshi_shadow import bench


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


def test_cpu_meter_counts_a_restarted_child_from_zero(tmp_path, monkeypatch):
    state = tmp_path / "up.json"
    tables = iter([
        {1: (0, 1, 50), 10: (1, 100, 100)},                 # window start
        {1: (0, 2, 60), 10: (1, 150, 150)},                 # child 10 used 50 ticks
        {1: (0, 3, 70), 11: (1, 20, 20)},                   # it restarted as 11, which used 20
    ])
    pids = iter([10, 10, 11])

    def write_state():
        state.write_text(json.dumps({"pid": 1, "children": {"sim": {"pid": next(pids), "alive": True}}}))

    monkeypatch.setattr(bench, "_proc_table", lambda: next(tables))
    meter = bench.CpuMeter(state)
    for _ in range(3):
        write_state()
        meter.sample()
    hz = bench.os.sysconf("SC_CLK_TCK")
    secs = meter.seconds()
    assert secs["sim"] == (50 + 20) / hz
    assert secs["up (supervisor)"] == 2 / hz  # its own time only, not its children's
    assert meter.pids() == {"sim": 2, "up (supervisor)": 1}


def test_recompute_children_reprice_the_whole_generated_day(tmp_path):
    db = str(tmp_path / "day.duckdb")
    gen = bench._child(["_generate", "--db", db, "--strikes", "2", "--quote-every", "60"])
    res = bench._child(["_recompute", "--db", db])
    assert gen["quotes"] > 0
    assert res["quotes"] == gen["quotes"]
    assert res["rows"] == 2 * gen["quotes"]
    assert res["duplicates"] == 0
    assert res["peak_rss_mib"] >= res["rss_before_mib"] > 0
