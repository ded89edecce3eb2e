"""`kalshi-shadow up`: run the whole platform and keep it running.

Starts the exchange simulator (when no Kalshi credentials are configured, or with --sim), both collectors, and the
Dagster webserver (127.0.0.1) and daemon. Each child runs in its own session and logs to LOG_PATH/<name>.log; a
child that exits is restarted with capped exponential backoff. SIGINT/SIGTERM stop every child's process group
(SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kalshi_shadow.config import ConfigError, Settings

log = logging.getLogger("kalshi_shadow.up")
REPO_ROOT = Path(__file__).resolve().parents[1]
BACKOFF_MAX = 60.0
HEALTHY_AFTER = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float | None = None
    log_file: object = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d), log: %s", self.name, self.proc.pid, self.log_path)

    def signal_group(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kalshi_shadow.cli", *args]


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def _wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _prepare_dagster_home(home: Path) -> None:
    """Install dagster.yaml and create the instance storage once, before the webserver and daemon start:
    started together on a fresh home, both would create it and leave two migration heads behind."""
    home.mkdir(parents=True, exist_ok=True)
    src = REPO_ROOT / "dagster.yaml"
    dst = home / "dagster.yaml"
    if src.exists() and (not dst.exists() or dst.read_text() != src.read_text()):
        shutil.copyfile(src, dst)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.run([_bin("dagster"), "instance", "migrate"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"could not initialise the Dagster instance in {home}: {proc.stderr[-2000:]}")


def build_children(args: argparse.Namespace, settings: Settings) -> list[Child]:
    env = dict(os.environ)
    env["KALSHI_SHADOW_DATA_DIR"] = str(settings.data_dir)
    env["DB_PATH"] = str(settings.db_path)
    env["LOG_PATH"] = str(settings.log_path)
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    children: list[Child] = []
    use_sim = args.sim or not settings.has_kalshi_credentials
    if use_sim:
        env["KALSHI_BASE_URL"] = f"http://127.0.0.1:{args.kalshi_port}/trade-api/v2"
        env["COINBASE_WS_URL"] = f"ws://127.0.0.1:{args.coinbase_port}"
        env.pop("KALSHI_API_KEY_ID", None)
        env.pop("KALSHI_PRIVATE_KEY_PATH", None)
        if args.fast_clock:
            env["KALSHI_SHADOW_FAST_CLOCK"] = "1"
        sim_args = ["sim", "--kalshi-port", str(args.kalshi_port), "--coinbase-port", str(args.coinbase_port)]
        children.append(Child("sim", _cli(*sim_args, *(["--fast-clock"] if args.fast_clock else [])), env, settings.log_path / "sim.log"))
    children.append(Child("collect-spot", _cli("collect-spot"), env, settings.log_path / "collect-spot.log"))
    children.append(Child("collect-quotes", _cli("collect-quotes", "--status", "active"), env, settings.log_path / "collect-quotes.log"))
    if not args.no_dagster:
        workspace = REPO_ROOT / "workspace.yaml"
        target = ["-w", str(workspace)] if workspace.exists() else ["-m", "kalshi_shadow.definitions"]
        children.append(Child("dagster-daemon", [_bin("dagster-daemon"), "run", *target], env, settings.log_path / "dagster-daemon.log"))
        children.append(Child("dagster-webserver", [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(args.dagster_port), *target],
                              env, settings.log_path / "dagster-webserver.log"))
    return children


def supervise(children: list[Child], *, stop_after: float | None = None, grace: float = 15.0) -> int:
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for c in children:
        c.start()
        if c.name == "sim":
            port = int(c.argv[c.argv.index("--kalshi-port") + 1])
            if not _wait_for_port(port, 20):
                log.error("the simulator did not open port %d; see %s", port, c.log_path)
    deadline = time.monotonic() + stop_after if stop_after else None
    while not stopping and (deadline is None or time.monotonic() < deadline):
        now = time.monotonic()
        for c in children:
            if c.proc is not None and c.proc.poll() is not None and c.restart_at is None:
                ran = now - c.started_at
                if ran > HEALTHY_AFTER:
                    c.backoff = 1.0
                c.restart_at = now + c.backoff
                log.warning("%s exited with %s after %.0fs; restarting in %.0fs (see %s)", c.name, c.proc.returncode, ran, c.backoff, c.log_path)
                c.backoff = min(c.backoff * 2, BACKOFF_MAX)
            if c.restart_at is not None and now >= c.restart_at:
                c.restarts += 1
                c.start()
        time.sleep(0.5)
    log.info("stopping %d children", len(children))
    # Consumers first, the simulator last, so collectors do not record its shutdown as a disconnect.
    _stop([c for c in children if c.name != "sim"], grace)
    _stop([c for c in children if c.name == "sim"], grace)
    log.info("all stopped")
    return 0


def _stop(children: list[Child], grace: float) -> None:
    for c in reversed(children):
        c.signal_group(signal.SIGTERM)
    end = time.monotonic() + grace
    for c in reversed(children):
        if c.proc is None:
            continue
        try:
            c.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs: killing it", c.name, grace)
            c.signal_group(signal.SIGKILL)
            c.proc.wait()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kalshi-shadow up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", action="store_true", help="use the simulator even if Kalshi credentials are set")
    ap.add_argument("--fast-clock", action="store_true", help="simulator cadence: 15-minute markets every 2 min, hourly ones every 5 min")
    ap.add_argument("--data-dir", type=Path, help="overrides KALSHI_SHADOW_DATA_DIR")
    ap.add_argument("--dagster-port", type=int, default=3000)
    ap.add_argument("--kalshi-port", type=int, default=8765, help="simulator REST port")
    ap.add_argument("--coinbase-port", type=int, default=8766, help="simulator WebSocket port")
    ap.add_argument("--no-dagster", action="store_true", help="only the simulator and the collectors")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = run until Ctrl-C)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s up %(levelname)s %(message)s")
    if args.data_dir:
        os.environ["KALSHI_SHADOW_DATA_DIR"] = str(args.data_dir.resolve())
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"kalshi-shadow up: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_dagster:
        _prepare_dagster_home(settings.dagster_home)
    children = build_children(args, settings)
    source = "the local exchange simulator" if any(c.name == "sim" for c in children) else settings.kalshi_base_url
    print(f"kalshi-shadow: shadow mode (no orders). Market data from {source}.")
    print(f"  data:      {settings.data_dir}  (warehouse {settings.db_path})")
    print(f"  logs:      {settings.log_path}")
    if not args.no_dagster:
        print(f"  Dagster:   http://127.0.0.1:{args.dagster_port}")
    print("  Ctrl-C stops everything.", flush=True)
    return supervise(children, stop_after=args.seconds or None)
