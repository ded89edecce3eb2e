"""`kalshi-shadow status` against a real `up` (simulator + collectors, no Dagster): healthy exits 0; a collector held
down after a kill shows dead and exits 1; a collector that cannot start is recorded as a crash loop. Every process
group a test saw is killed in teardown (the `Ups` helper of the supervisor tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


from kalshi_shadow_tests.test_supervisor import REPO, Ups, _state, _stop
from kalshi_shadow_tests.waiting import wait_for


def _status(ups: Ups, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kalshi_shadow.cli", "status", *args], cwd=REPO, env=ups.env,
                          capture_output=True, text=True, timeout=60)


def _restarts(data_dir: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (data_dir / "run" / "restarts.jsonl").read_text().splitlines()]
    except OSError:
        return []


def test_status_without_any_up_exits_1_and_says_so(ups: Ups) -> None:
    res = _status(ups)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "up: NOT RUNNING" in res.stdout and "DOWN:" in res.stdout, res.stdout


def test_status_is_0_while_healthy_and_1_with_a_collector_held_down_after_a_kill(ups: Ups) -> None:
    ups.env["KALSHI_SHADOW_NO_RESTART"] = "collect-spot"
    up = ups.start()
    st = ups.ready(up)
    res = _status(ups, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    healthy = json.loads(res.stdout)
    assert healthy["ok"] is True and healthy["processes"]["up"]["pid"] == up.pid, healthy
    for name, c in healthy["processes"]["children"].items():
        assert c["alive"] and c["pid"] == st["children"][name]["pid"] and c["uptime_seconds"] >= 0, (name, c)
    assert set(healthy["warehouse"]) >= {"path", "error"}  # no Dagster here: the warehouse is not created yet

    victim = st["children"]["collect-spot"]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: _state(ups.data_dir).get("children", {}).get("collect-spot", {}).get("held"), 15,
             what="collect-spot recorded as held down", every=0.2)
    assert [(x["child"], x["pid"], x["cause"], x["held"], x["restart_number"]) for x in _restarts(ups.data_dir)] == \
        [("collect-spot", victim, "killed by SIGKILL", True, None)]

    res = _status(ups, "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    down = json.loads(res.stdout)
    spot = down["processes"]["children"]["collect-spot"]
    assert spot["alive"] is False and spot["pid"] is None and spot["held"] is True and spot["restarts"] == 0, spot
    assert "collect-spot: dead (held down)" in down["problems"], down["problems"]
    assert down["processes"]["children"]["collect-quotes"]["alive"] is True

    text = _status(ups)
    assert text.returncode == 1 and "DEAD" in text.stdout and "held down" in text.stdout, text.stdout
    assert _state(ups.data_dir)["children"]["collect-spot"]["restarts"] == 0, "a held-down child must not be restarted"
    assert _stop(up) == 0, ups.output(1)


def test_a_collector_that_cannot_start_is_recorded_as_a_crash_loop(ups: Ups) -> None:
    # A real fault: <data_dir>/health is a file, so every collector dies at start on creating its health record.
    (ups.data_dir / "health").write_text("not a directory\n")
    ups.env.update(KALSHI_SHADOW_CRASH_LOOP_RESTARTS="2", KALSHI_SHADOW_CRASH_LOOP_MINUTES="1")
    up = ups.start()

    def looping_exit() -> dict | None:  # written just after the crash_loop line
        return next((x for x in _restarts(ups.data_dir) if x.get("kind") == "exit" and x["crash_loop"]), None)

    last = wait_for(looping_exit, 30, what="a crash loop in restarts.jsonl", every=0.2)
    rec = next(x for x in _restarts(ups.data_dir) if x["kind"] == "crash_loop" and x["child"] == last["child"])
    # Every collector dies the same way; whichever loops first is recorded.
    assert rec["child"] in ("collect-spot", "collect-kraken", "collect-bitstamp", "collect-quotes") and rec["exits"] == 3 and rec["threshold"] == 2, rec
    assert rec["last_exit_code"] == 1 and rec["cause"] == "exited with code 1" and rec["backoff_seconds"] == 300, rec
    exits = [x for x in _restarts(ups.data_dir) if x["kind"] == "exit" and x["child"] == rec["child"]]
    assert [x["restart_number"] for x in exits] == [1, 2, 3], exits
    assert exits[-1]["crash_loop"] is True and exits[-1]["restart_in_seconds"] >= 300, exits[-1]

    child = wait_for(lambda: _state(ups.data_dir)["children"][rec["child"]].get("crash_loop") and _state(ups.data_dir)["children"][rec["child"]],
                     10, what="crash_loop in up.json")
    assert child["alive"] is False and child["restart_at"], child
    res = _status(ups, "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    st = json.loads(res.stdout)
    assert f"{rec['child']}: crash loop" in st["problems"], st["problems"]
    assert st["processes"]["children"]["sim"]["alive"] is True
    assert _stop(up) == 0, ups.output(1)
    assert all(k["alive"] is False for k in _state(ups.data_dir)["children"].values())


def test_status_reads_firing_checks_and_the_last_delivery_from_alerts_jsonl_and_table_freshness(ups: Ups) -> None:
    from datetime import datetime, timezone

    from kalshi_shadow.pricing.snapshots import insert_wide_snapshots
    from kalshi_shadow.warehouse.connection import connect
    from kalshi_shadow.warehouse.ddl import ensure_schema

    lines = [
        {"ts": "2026-01-01T00:00:00+00:00", "kind": "check_failed", "asset": "spot_ticks", "check": "fresh"},  # old format
        {"ts": "2026-01-01T00:01:00+00:00", "key": "check:quotes", "kind": "check_failed", "title": "quotes stale",
         "severity": "ERROR", "delivery": {"ok": True, "attempts": 1, "error": None, "targets": 1}},
        {"ts": "2026-01-01T00:02:00+00:00", "key": "check:quotes", "kind": "check_reminder", "title": "quotes stale",
         "severity": "ERROR"},
        {"ts": "2026-01-01T00:03:00+00:00", "key": "check:lag", "kind": "check_failed", "title": "lag"},
        {"ts": "2026-01-01T00:04:00+00:00", "key": "check:lag", "kind": "check_recovered", "title": "lag ok",
         "delivery": {"ok": False, "attempts": 3, "error": "timed out", "targets": 1}},
    ]
    (ups.data_dir / "alerts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"ts": "half a li')
    conn = connect(ups.data_dir / "warehouse.duckdb")
    ensure_schema(conn)
    conn.execute("DROP TABLE kalshi_would_trades CASCADE")  # a warehouse from before that table: tolerated
    insert_wide_snapshots(conn, "INSERT INTO kalshi_edge_snapshots (quote_key, quote_date, ticker, series_ticker, event_ticker, "
                 "model_version, quote_ts, created_at, lot_size, reasons, rules_version) SELECT uuid(), current_date, "
                 "'T', 'S', 'E', 'm', now() - INTERVAL (i) SECOND - INTERVAL 10 SECOND, now() - INTERVAL (i) SECOND, 100, [], 'r' "
                 "FROM range(20) t(i)")
    conn.close()

    res = _status(ups, "--json")
    st = json.loads(res.stdout)
    assert res.returncode == 1 and "failing: check:quotes" in st["problems"], st["problems"]  # an ERROR check: blind
    firing = {f["key"]: f for f in st["alerts"]["firing"]}
    assert set(firing) == {"check:spot_ticks:fresh", "check:quotes"}, firing
    assert firing["check:quotes"]["since"] == "2026-01-01T00:01:00+00:00", firing  # a reminder does not move it
    assert st["alerts"]["last"]["key"] == "check:lag" and st["alerts"]["last"]["delivered"] is False, st["alerts"]
    wh = st["warehouse"]
    assert wh["tables"]["kalshi_would_trades"] == {"missing": True} and wh["tables"]["spot_ticks"]["newest_age_seconds"] is None
    assert 0 <= wh["tables"]["kalshi_edge_snapshots"]["newest_age_seconds"] < 60 and wh["live_lag_p95_seconds"] == 10.0, wh
    assert wh["decisions"] == {"target": None, "versions": {}}

    # A writer holding the file: status says so and carries on, within its lock timeout.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from kalshi_shadow.warehouse.connection import connect; "
                               f"c = connect({str(ups.data_dir / 'warehouse.duckdb')!r}); print('held', flush=True); time.sleep(30)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = datetime.now(timezone.utc)
        res = _status(ups, "--lock-timeout", "0.5")
        assert (datetime.now(timezone.utc) - t0).total_seconds() < 15
        assert "locked by a writer, skipped" in res.stdout and "last alert:" in res.stdout, res.stdout
        assert "NOT delivered (timed out)" in res.stdout, res.stdout
    finally:
        holder.kill()
        holder.wait()


def test_the_journal_is_read_from_its_end(tmp_path: Path) -> None:
    """A journal of many blocks: a read since a time, and the last span, equal filtering the whole file (a cut
    first line of a block and a half-written last line included)."""
    from datetime import datetime, timedelta, timezone

    from kalshi_shadow.alerts import journal

    path = tmp_path / "alerts.jsonl"
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with open(path, "w") as fh:
        for i in range(20_000):
            fh.write(json.dumps({"ts": (t0 + timedelta(minutes=i)).isoformat(), "key": f"k{i % 7}", "pad": "x" * (i % 90)}) + "\n")
        fh.write('{"ts": "2026-02-')
    whole = journal.read(path)
    assert len(whole) == 20_000
    for since in (t0 + timedelta(minutes=19_990), t0 + timedelta(minutes=12_345), t0 - timedelta(days=1)):
        assert journal.read(path, since=since) == [r for r in whole if datetime.fromisoformat(r["ts"]) >= since]
    last = journal.read_last(path, timedelta(hours=1))
    assert [r["ts"] for r in last] == [r["ts"] for r in whole[-61:]]
    assert journal.read_last(tmp_path / "missing.jsonl", timedelta(hours=1)) == []
