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
from typing import Iterator

import pytest

from kalshi_shadow_tests.test_supervisor import REPO, Ups, _state, _stop
from kalshi_shadow_tests.waiting import wait_for


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[Ups]:
    u = Ups(tmp_path.resolve())
    try:
        yield u
    finally:
        u.kill_all()


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
    assert rec["child"] in ("collect-spot", "collect-quotes") and rec["exits"] == 3 and rec["threshold"] == 2, rec
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
