"""`kalshi-shadow up` never doubles its processes: one `up` per data directory, a state file that tells what runs, and
children left behind by a SIGKILLed `up` are stopped by the next one. Real processes (simulator + collectors, no
Dagster); every process group a test saw is killed in teardown so nothing leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


from kalshi_shadow.supervisor import free_ports
from kalshi_shadow_tests.waiting import wait_for

REPO = Path(__file__).parents[1]
CHILDREN = {"sim", "collect-spot", "collect-kraken", "collect-bitstamp", "collect-quotes"}


def _running(pid: int) -> bool:
    """Alive and not a zombie (orphans are reparented to an init that may not reap them promptly)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _ours(pid: int) -> bool:
    """A running process started from this code base, so teardown never signals a reused pid."""
    try:
        return _running(pid) and b"kalshi_shadow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _state(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / "run" / "up.json").read_text())
    except (OSError, ValueError):
        return {}


def _all_alive(data_dir: Path, up_pid: int) -> Callable[[], dict | None]:
    """up.json written by `up_pid`, with every child alive and running."""
    def check() -> dict | None:
        st = _state(data_dir)
        kids = st.get("children", {})
        ok = st.get("pid") == up_pid and set(kids) == CHILDREN and all(k["alive"] and k["pid"] and _running(k["pid"]) for k in kids.values())
        return st if ok else None
    return check


class Ups:
    """Starts `kalshi-shadow up --no-dagster` on one data dir and remembers every pid it saw, for teardown."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "KALSHI_SHADOW_DATA_DIR": str(data_dir)}
        for k in ("KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY_PATH", "DB_PATH", "LOG_PATH"):
            self.env.pop(k, None)
        self.pids: set[int] = set()
        self.n = 0

    def argv(self) -> list[str]:
        kalshi, coinbase, kraken, bitstamp, kalshi_ws = free_ports(5)
        return [sys.executable, "-m", "kalshi_shadow.cli", "up", "--no-dagster", "--data-dir", str(self.data_dir),
                "--kalshi-port", str(kalshi), "--coinbase-port", str(coinbase), "--kraken-port", str(kraken),
                "--bitstamp-port", str(bitstamp), "--kalshi-ws-port", str(kalshi_ws)]

    def start(self) -> subprocess.Popen:
        self.n += 1
        out = open(self.data_dir / f"up-{self.n}.out", "wb")
        # Own session: the test's process group is never signalled, and teardown can kill the whole group.
        proc = subprocess.Popen(self.argv(), cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.pids.add(proc.pid)
        return proc

    def ready(self, proc: subprocess.Popen) -> dict:
        st = wait_for(_all_alive(self.data_dir, proc.pid), 30, what="up.json with all children alive", every=0.2)
        self.pids |= {k["pid"] for k in st["children"].values()}
        return st

    def output(self, n: int) -> str:
        return (self.data_dir / f"up-{n}.out").read_text(errors="replace")

    def kill_all(self) -> None:
        self.pids |= {k["pid"] for k in _state(self.data_dir).get("children", {}).values() if k.get("pid")}
        for pid in self.pids:
            if _ours(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_second_up_on_the_same_data_dir_exits_3_naming_the_dir_and_the_running_up(ups: Ups) -> None:
    first = ups.start()
    before = ups.ready(first)
    second = subprocess.run(ups.argv(), cwd=REPO, env=ups.env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 3, second.stderr
    assert str(ups.data_dir) in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
    assert "started" not in second.stderr, "the refused up must not start anything"
    after = _state(ups.data_dir)
    assert after["pid"] == first.pid
    assert {n: k["pid"] for n, k in after["children"].items()} == {n: k["pid"] for n, k in before["children"].items()}
    assert first.poll() is None
    assert _stop(first) == 0, ups.output(1)


def test_up_json_lists_live_children_while_running_and_is_marked_stopped_after_sigterm(ups: Ups) -> None:
    up = ups.start()
    st = ups.ready(up)
    assert st["stopped"] is False and st["started_at"] and st["updated_at"]
    for name, k in st["children"].items():
        assert k["pgid"] == k["pid"] == os.getpgid(k["pid"]), name
        assert "kalshi_shadow.cli" in k["argv"] and name in k["argv"], k
        assert k["restarts"] == 0 and k["last_exit_code"] is None and k["started_at"], k
    pids = [k["pid"] for k in st["children"].values()]
    assert _stop(up) == 0, ups.output(1)
    final = _state(ups.data_dir)
    assert final["pid"] == up.pid and final["stopped"] is True
    assert all(k["alive"] is False and k["pid"] is None for k in final["children"].values()), final
    assert not any(_running(p) for p in pids)
    assert "all stopped" in ups.output(1)


def test_next_up_stops_the_children_a_killed_up_left_running_then_starts_its_own(ups: Ups) -> None:
    first = ups.start()
    old = {n: k["pid"] for n, k in ups.ready(first)["children"].items()}
    first.send_signal(signal.SIGKILL)  # only `up`: its children are in their own sessions and keep running
    first.wait(timeout=10)
    time.sleep(1)
    assert all(_running(p) for p in old.values()), "the children should have outlived the killed up"

    second = ups.start()
    new = {n: k["pid"] for n, k in ups.ready(second)["children"].items()}
    assert not any(_running(p) for p in old.values()), "orphans still running"
    assert not set(new.values()) & set(old.values())
    out = ups.output(2)
    for name, pid in old.items():
        assert f"stopping orphaned {name} (pid {pid}) left by a killed up" in out, out
    assert _stop(second) == 0, out


def test_a_killed_child_is_restarted_and_its_exit_logged(ups: Ups) -> None:
    up = ups.start()
    victim = ups.ready(up)["children"]["collect-spot"]["pid"]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict | None:
        k = _state(ups.data_dir).get("children", {}).get("collect-spot", {})
        return k if k.get("restarts") == 1 and k.get("alive") and k.get("pid") not in (None, victim) else None

    k = wait_for(restarted, 15, what="collect-spot restarted", every=0.2)
    ups.pids.add(k["pid"])
    assert k["last_exit_code"] == -9 and k["last_exit_at"], k
    lines = [json.loads(line) for line in (ups.data_dir / "run" / "restarts.jsonl").read_text().splitlines()]
    assert [(x["child"], x["pid"], x["exit_code"]) for x in lines] == [("collect-spot", victim, -9)], lines
    assert lines[0]["ran_seconds"] > 0 and lines[0]["restart_in_seconds"] == 1.0 and lines[0]["ts"], lines
    # The cause spelled out, for the alert wiring that reads this file.
    assert lines[0]["kind"] == "exit" and lines[0]["signal"] == "SIGKILL" and lines[0]["cause"] == "killed by SIGKILL", lines
    assert lines[0]["restart_number"] == 1 and lines[0]["held"] is False and lines[0]["crash_loop"] is False, lines
    assert k["last_exit_signal"] == "SIGKILL" and k["last_exit_cause"] == "killed by SIGKILL" and k["crash_loop"] is False, k
    assert _stop(up) == 0, ups.output(1)


def test_with_credentials_and_sim_the_simulator_checks_the_key_and_the_keyed_collectors_run(tmp_path: Path, rsa_key, monkeypatch) -> None:
    import argparse

    from cryptography.hazmat.primitives import serialization

    from kalshi_shadow.config import Settings
    from kalshi_shadow.supervisor import build_children

    key = tmp_path / "k.pem"
    key.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    args = argparse.Namespace(sim=True, fast_clock=False, kalshi_port=18765, coinbase_port=18766, kraken_port=0, bitstamp_port=0,
                              kalshi_ws_port=0, no_dagster=True, dagster_port=3000)
    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KALSHI_API_KEY_ID", "k1")
    monkeypatch.setenv("KALSHI_PRIVATE_KEY_PATH", str(key))
    keyed = Settings.from_env()
    children = {c.name: c for c in build_children(args, keyed)}
    assert set(children) == {"sim", "collect-spot", "collect-kraken", "collect-bitstamp", "collect-index", "collect-books",
                             "collect-quotes"}
    sim = children["sim"].argv
    public = Path(sim[sim.index("--public-key") + 1]).read_bytes()
    assert public == rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "k1" not in " ".join(sim)  # the key id reaches the simulator through the environment, not its command line
    env = children["collect-index"].env
    assert env["KALSHI_WS_URL"] == "ws://127.0.0.1:18769/trade-api/ws/v2" and env["KALSHI_API_KEY_ID"] == "k1"
    monkeypatch.delenv("KALSHI_API_KEY_ID")
    monkeypatch.delenv("KALSHI_PRIVATE_KEY_PATH")
    unkeyed = Settings.from_env()
    plain = {c.name: c for c in build_children(args, unkeyed)}
    assert "collect-index" not in plain and "collect-books" not in plain and "--public-key" not in plain["sim"].argv


def test_real_without_keys_records_the_public_markets_and_the_banner_says_so(tmp_path: Path, monkeypatch) -> None:
    import argparse

    from kalshi_shadow.config import KALSHI_PROD_URL, Settings
    from kalshi_shadow.supervisor import banner, build_children

    monkeypatch.setenv("KALSHI_SHADOW_DATA_DIR", str(tmp_path))
    for var in ("KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY_PATH", "KALSHI_BASE_URL", "COINBASE_WS_URL"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env()
    args = argparse.Namespace(sim=False, real=True, fast_clock=False, kalshi_port=18765, coinbase_port=18766, kraken_port=0,
                              bitstamp_port=0, kalshi_ws_port=0, no_dagster=True, dagster_port=3000)
    children = {c.name: c for c in build_children(args, settings)}
    assert set(children) == {"collect-spot", "collect-kraken", "collect-bitstamp", "collect-quotes"}  # no sim, no keyed streams
    assert "KALSHI_BASE_URL" not in children["collect-quotes"].env and settings.kalshi_base_url == KALSHI_PROD_URL
    assert banner(args, settings)[0].startswith("kalshi-shadow: shadow mode (no orders). REAL MARKETS: Kalshi https://")
    assert "public data, no keys" in banner(args, settings)[0]
    default = argparse.Namespace(**{**vars(args), "real": False})
    assert "sim" in {c.name for c in build_children(default, settings)}  # no flags, no keys: the simulator
    assert banner(default, settings)[0].startswith("kalshi-shadow: shadow mode (no orders). SIMULATOR:")
