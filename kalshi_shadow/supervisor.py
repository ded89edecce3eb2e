"""`kalshi-shadow up`: run the whole platform and keep it running.

Starts the exchange simulator (when no Kalshi credentials are configured, or with --sim; never with --real), the
collectors (the official index and the book stream only with credentials: REST polls and the spot venues are public,
so `--real` without keys records real markets), then
migrates the warehouse to this release's schema if it needs it, then the Dagster webserver (127.0.0.1) and daemon. Each child runs in its own session and logs to LOG_PATH/<name>.log; a
child that exits is restarted with capped exponential backoff. SIGINT/SIGTERM stop every child's process group
(SIGTERM, then SIGKILL after a grace period).

Every child exit is a line in <data_dir>/run/restarts.jsonl (kind "exit": child, pid, exit code or signal, uptime,
restart number). A child that exits more than KALSHI_SHADOW_CRASH_LOOP_RESTARTS (5) times within
KALSHI_SHADOW_CRASH_LOOP_MINUTES (10) minutes is in a crash loop: a "crash_loop" line, `crash_loop: true` in up.json,
and KALSHI_SHADOW_CRASH_LOOP_BACKOFF_SECONDS (300) between restarts instead of spinning. Once it has stayed up for
60 s a "crash_loop_recovered" line clears it. Maintenance switch: KALSHI_SHADOW_NO_RESTART=collect-spot[,name...]
holds those children down: they start, but once they exit they are not restarted (the exit is recorded with
`held: true`) until `up` is restarted without the switch.

One `up` per data directory: it holds an flock on <data_dir>/run/up.lock for its whole life and records itself and its
children in <data_dir>/run/up.json (child exits also go to run/restarts.jsonl). Children live in their own sessions,
so they survive a SIGKILLed `up`; the next `up` finds them in up.json and stops them before starting its own.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kalshi_shadow.config import ConfigError, Settings

log = logging.getLogger("kalshi_shadow.up")
REPO_ROOT = Path(__file__).resolve().parents[1]
BACKOFF_MAX = 60.0
HEALTHY_AFTER = 60.0
ORPHAN_GRACE = 10.0
EXIT_LOCKED = 3
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_MINUTES = 10.0
CRASH_LOOP_BACKOFF = 300.0


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        log.warning("%s=%r is not a number; using %g", name, raw, default)
        return default


def _held_down() -> set[str]:
    """Children named in KALSHI_SHADOW_NO_RESTART: not restarted once they exit (maintenance: hold a child down)."""
    return {n.strip() for n in os.environ.get("KALSHI_SHADOW_NO_RESTART", "").split(",") if n.strip()}


def describe_exit(code: int | None) -> tuple[int | None, str | None, str]:
    """(exit code, signal name, cause) of a Popen returncode: a negative one is death by that signal."""
    if code is None:
        return None, None, "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return None, name, f"killed by {name}"
    return code, None, f"exited with code {code}" + (" (clean exit, not expected while up runs)" if code == 0 else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


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
    started_at_utc: str | None = None
    last_exit_code: int | None = None
    last_exit_at: str | None = None
    exit_times: list[float] = field(default_factory=list)  # monotonic times of exits inside the crash-loop window
    crash_loop: bool = False
    crash_loop_since: str | None = None
    held: bool = False  # exited while held down by KALSHI_SHADOW_NO_RESTART: not restarted
    restart_at_utc: str | None = None
    before_first_start: object = field(default=None, repr=False)  # called once, just before the first start

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()
        self.started_at_utc = _now()
        self.restart_at = None
        log.info("started %s (pid %d), log: %s", self.name, self.proc.pid, self.log_path)

    def signal_group(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def record(self) -> dict:
        alive = self.proc is not None and self.proc.poll() is None
        pid = self.proc.pid if alive else None
        _, sig, cause = describe_exit(self.last_exit_code) if self.last_exit_at else (None, None, None)
        return {"pid": pid, "pgid": pid, "argv": self.argv, "started_at": self.started_at_utc if alive else None,
                "restarts": self.restarts, "last_exit_code": self.last_exit_code, "last_exit_signal": sig,
                "last_exit_cause": cause, "last_exit_at": self.last_exit_at, "alive": alive,
                "crash_loop": self.crash_loop, "crash_loop_since": self.crash_loop_since, "held": self.held,
                "restart_at": self.restart_at_utc if not alive and self.restart_at is not None else None}


class RunDir:
    """<data_dir>/run: the single-instance lock, the state file other tools read, and the log of child exits."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "run"
        self.path.mkdir(parents=True, exist_ok=True)
        self.state_path = self.path / "up.json"
        self.restarts_path = self.path / "restarts.jsonl"
        self.started_at = _now()
        self._lock_fd: int | None = None

    def try_lock(self) -> bool:
        """Take the lock for the life of this process; the OS drops it when we die, so a killed `up` never blocks
        the next one. The fd is not inheritable (Python's default), so children that outlive us cannot hold it."""
        fd = os.open(self.path / "up.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, children: list[Child], *, stopped: bool = False) -> None:
        """Atomic rewrite (temp file, fsync, rename) so a reader never sees half a file."""
        state = {"pid": os.getpid(), "started_at": self.started_at, "updated_at": _now(), "stopped": stopped,
                 "children": {c.name: c.record() for c in children}}
        tmp = self.path / f".up.json.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    def append(self, line: dict) -> None:
        with open(self.restarts_path, "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def log_exit(self, c: Child, ran: float, restart_in: float | None) -> None:
        """One child exit. `exit_code` is Popen's returncode (negative: the signal); `signal`/`cause` spell it out.
        `restart_number` is the restart this exit leads to (None when held down), `ran_seconds` the uptime."""
        code, sig, cause = describe_exit(c.last_exit_code)
        self.append({"ts": c.last_exit_at, "kind": "exit", "child": c.name, "pid": c.proc.pid,
                     "exit_code": c.last_exit_code, "signal": sig, "cause": cause, "ran_seconds": round(ran, 3),
                     "restart_number": None if restart_in is None else c.restarts + 1,
                     "restart_in_seconds": restart_in, "held": restart_in is None, "crash_loop": c.crash_loop})


def _cmdline_matches(pid: int, argv: list[str]) -> bool:
    """True while `pid` is a live process running `argv`; guards against pid reuse. A zombie has an empty cmdline,
    and a script started through its shebang line shows the interpreter in front of argv, hence the tail match."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return False
    want = [os.fsencode(a) for a in argv]
    return bool(want) and cmdline[-len(want):] == want


def stop_orphans(previous: dict | None, grace: float = ORPHAN_GRACE) -> list[str]:
    """Stop the process groups of children a killed `up` left running (they are in their own sessions, so its death
    did not take them along): SIGTERM, then SIGKILL after `grace` seconds. Returns the names of those found."""
    orphans = [(name, rec["pid"], rec.get("pgid") or rec["pid"], rec.get("argv") or [])
               for name, rec in ((previous or {}).get("children") or {}).items()
               if rec.get("pid") and _cmdline_matches(rec["pid"], rec.get("argv") or [])]
    for name, pid, _, _ in orphans:
        log.warning("stopping orphaned %s (pid %d) left by a killed up", name, pid)
    left = orphans
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for name, _, pgid, _ in left:
            if sig == signal.SIGKILL:
                log.warning("orphaned %s did not stop in %.0fs: killing it", name, grace)
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = [o for o in left if _cmdline_matches(o[1], o[3])]
    for name, pid, _, _ in left:
        log.error("could not stop orphaned %s (pid %d)", name, pid)
    return [o[0] for o in orphans]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kalshi_shadow.cli", *args]


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free right now: for an `up` (bench, tests) beside another one on this machine.

    Taken below the kernel's ephemeral range: a port from inside it (what binding port 0 gives) can be taken by any
    outgoing connection before `up` binds it, which busy parallel tests did."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    out: list[int] = []
    for port in random.sample(range(10000, max(low, 10000 + 4 * n)), k=min(2000, max(low, 10000 + 4 * n) - 10000)):
        if len(out) == n:
            break
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        out.append(port)
    if len(out) < n:
        raise RuntimeError(f"no {n} free loopback ports below {low}")
    return out


def _wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def instance_yaml(home: Path) -> str:
    """The repo's dagster.yaml plus, under `home`, one consolidated SQLite event log (Dagster's default keeps a ~330 KB
    file per run, which at a run every 30 s is most of DAGSTER_HOME's growth) and compute logs written without a
    terminal mirror (kalshi_shadow/compute_logs.py: no `tail` processes per step). Paths are written out, not read
    from env vars, so the repo's file stays valid for the Dagster CLI run from the repo root."""
    base = (REPO_ROOT / "dagster.yaml").read_text()
    return base + ("\nevent_log_storage:\n  module: dagster.core.storage.event_log\n"
                   "  class: ConsolidatedSqliteEventLogStorage\n  config:\n"
                   f"    base_dir: {json.dumps(str(home.resolve()))}\n"
                   "\ncompute_logs:\n  module: kalshi_shadow.compute_logs\n  class: FileComputeLogManager\n  config:\n"
                   f"    base_dir: {json.dumps(str((home / 'storage').resolve()))}\n")


def _prepare_dagster_home(home: Path) -> None:
    """Install dagster.yaml and create the instance storage once, before the webserver and daemon start:
    started together on a fresh home, both would create it and leave two migration heads behind."""
    home.mkdir(parents=True, exist_ok=True)
    dst, text = home / "dagster.yaml", instance_yaml(home)
    if not dst.exists() or dst.read_text() != text:
        dst.write_text(text)
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
    # live_tick_sensor executes most live runs itself (defs/live.py): give its evaluation room past the 60-s default
    env.setdefault("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "300")
    children: list[Child] = []
    use_sim = mode(args, settings) == "sim"
    keyed = settings.has_kalshi_credentials
    if use_sim:
        env["KALSHI_BASE_URL"] = f"http://127.0.0.1:{args.kalshi_port}/trade-api/v2"
        kraken_port, bitstamp_port, kalshi_ws_port = venue_ports(args)
        env["COINBASE_WS_URL"] = f"ws://127.0.0.1:{args.coinbase_port}"
        env["KRAKEN_WS_URL"] = f"ws://127.0.0.1:{kraken_port}/v2"
        env["BITSTAMP_WS_URL"] = f"ws://127.0.0.1:{bitstamp_port}"
        env["KALSHI_WS_URL"] = f"ws://127.0.0.1:{kalshi_ws_port}/trade-api/ws/v2"
        if args.fast_clock:
            env["KALSHI_SHADOW_FAST_CLOCK"] = "1"
        sim_args = ["sim", "--kalshi-port", str(args.kalshi_port), "--coinbase-port", str(args.coinbase_port),
                    "--kraken-port", str(kraken_port), "--bitstamp-port", str(bitstamp_port), "--kalshi-ws-port", str(kalshi_ws_port)]
        if keyed:  # simulated credentials: the sim checks this key's signatures (its id comes from the environment)
            sim_args += ["--public-key", str(sim_public_key(settings))]
        children.append(Child("sim", _cli(*sim_args, *(["--fast-clock"] if args.fast_clock else [])), env, settings.log_path / "sim.log"))
    for venue in ("spot", "kraken", "bitstamp"):  # one process per spot venue: each has its own health and frontier
        children.append(Child(f"collect-{venue}", _cli(f"collect-{venue}"), env, settings.log_path / f"collect-{venue}.log"))
    if keyed:  # Kalshi's authenticated WebSocket: the official index, and the books with depth (REST polls stand by)
        children.append(Child("collect-index", _cli("collect-index"), env, settings.log_path / "collect-index.log"))
        children.append(Child("collect-books", _cli("collect-books"), env, settings.log_path / "collect-books.log"))
    children.append(Child("collect-quotes", _cli("collect-quotes", "--status", "active"), env, settings.log_path / "collect-quotes.log"))
    if not args.no_dagster:
        # One code server that lives as long as `up`: with a `python_module` workspace the daemon starts a fresh code
        # server every 60 s (Dagster's workspace refresh), each importing the code location anew, and the webserver
        # keeps its own. The live tick executes its runs in this server too (defs/live.py).
        port = args.code_server_port or free_ports(1)[0]
        target = ["-w", str(code_server_workspace(settings, port))]
        children.append(Child("dagster-code-server", [_bin("dagster"), "api", "grpc", "-m", "kalshi_shadow.definitions",
                                                      "--location-name", LOCATION_NAME, "-h", "127.0.0.1", "-p", str(port)],
                              env, settings.log_path / "dagster-code-server.log",
                              before_first_start=lambda: migrate_warehouse(settings.db_path)))
        children.append(Child("dagster-daemon", [_bin("dagster-daemon"), "run", *target], env, settings.log_path / "dagster-daemon.log"))
        children.append(Child("dagster-webserver", [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(args.dagster_port), *target],
                              env, settings.log_path / "dagster-webserver.log"))
    return children


LOCATION_NAME = "kalshi_shadow"  # as in the repo's workspace.yaml


def code_server_workspace(settings: Settings, port: int) -> Path:
    """The workspace `up`'s daemon and webserver load: the code location served by `up`'s own code server."""
    path = settings.data_dir / "run" / "workspace.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by kalshi-shadow up: the code server it runs on 127.0.0.1:{port}\n"
                    f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: {LOCATION_NAME}\n")
    return path


def mode(args: argparse.Namespace, settings: Settings) -> str:
    """'sim' (the default without credentials, or --sim) or 'real' (--real, or credentials without --sim)."""
    if getattr(args, "real", False):
        return "real"
    return "sim" if args.sim or not settings.has_kalshi_credentials else "real"


def banner(args: argparse.Namespace, settings: Settings) -> list[str]:
    """What `up` says it runs: the mode first, so nobody mistakes simulated data for real or the other way."""
    keyed = settings.has_kalshi_credentials
    if mode(args, settings) == "sim":
        head = "SIMULATOR: market data from the local exchange simulator on 127.0.0.1 (not real)" + (" with simulated keys" if keyed else "")
    else:
        head = f"REAL MARKETS: Kalshi {settings.kalshi_base_url}, Coinbase, Kraken, Bitstamp ({'keyed' if keyed else 'public data, no keys'})"
    books = ("  books:     Kalshi's WebSocket (orderbook_delta, depth " + str(settings.book_depth) + "); REST polls stand by"
             if keyed else f"  books:     REST polls every {settings.quote_interval_seconds:g} s, top of book (keys add the book stream with depth)")
    index = ("  index:     the official BRTI (cfbenchmarks_value) where fresh, else the proxy of Coinbase, Kraken, Bitstamp"
             if keyed else "  index:     the proxy of Coinbase, Kraken and Bitstamp (keys add the official BRTI)")
    return [f"kalshi-shadow: shadow mode (no orders). {head}.", books, index]


def venue_ports(args: argparse.Namespace) -> tuple[int, int, int]:
    """The simulator's Kraken, Bitstamp and Kalshi WebSocket ports: as given, else the three after the Coinbase port."""
    return (args.kraken_port or args.coinbase_port + 1, args.bitstamp_port or args.coinbase_port + 2,
            args.kalshi_ws_port or args.coinbase_port + 3)


def sim_public_key(settings: Settings) -> Path:
    """The public half of the configured private key, for the simulator to verify signatures with (run/)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(settings.kalshi_private_key_path).read_bytes(), password=None)
    path = settings.data_dir / "run" / "sim_public_key.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def migrate_warehouse(db_path: Path) -> None:
    """Bring the warehouse to this release's schema (warehouse/ddl.py) before Dagster starts: a long migration (a
    table rebuilt on months of data) then runs once, in view, while the collectors already write raw files, and
    not inside a live run. A failure is printed; the runs then fail on the same error, and that is alerted."""
    from kalshi_shadow.warehouse.connection import connect
    from kalshi_shadow.warehouse.ddl import ensure_schema, pending

    started = time.monotonic()
    try:
        conn = connect(db_path, timeout_seconds=600)
        try:
            todo = pending(conn)
            if todo:
                print(f"  warehouse: applying {len(todo)} migration(s), {todo[0].version:03d}_{todo[0].name} .. "
                      f"{todo[-1].version:03d}_{todo[-1].name}", flush=True)
            ensure_schema(conn)
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001 - up keeps the collectors running; Dagster runs will report it too
        log.error("warehouse migration failed: %s: %s", type(exc).__name__, exc)
        print(f"  warehouse: MIGRATION FAILED ({type(exc).__name__}: {exc}); see {db_path}", flush=True)
        return
    if todo:
        print(f"  warehouse: at version {todo[-1].version:03d} ({time.monotonic() - started:.1f} s)", flush=True)


def supervise(children: list[Child], *, stop_after: float | None = None, grace: float = 15.0, run: RunDir | None = None) -> int:
    stopping = False
    loop_restarts = int(_env_number("KALSHI_SHADOW_CRASH_LOOP_RESTARTS", CRASH_LOOP_RESTARTS))
    loop_window = _env_number("KALSHI_SHADOW_CRASH_LOOP_MINUTES", CRASH_LOOP_MINUTES) * 60
    loop_backoff = _env_number("KALSHI_SHADOW_CRASH_LOOP_BACKOFF_SECONDS", CRASH_LOOP_BACKOFF)
    held_down = _held_down()

    def save(stopped: bool = False) -> None:
        if run is not None:
            run.write_state(children, stopped=stopped)

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for c in children:
        if c.before_first_start is not None:
            c.before_first_start()
        c.start()
        save()
        if c.name == "sim":
            port = int(c.argv[c.argv.index("--kalshi-port") + 1])
            if not _wait_for_port(port, 20):
                log.error("the simulator did not open port %d; see %s", port, c.log_path)
        if c.name == "dagster-code-server":  # the daemon and webserver load the code location from it
            port = int(c.argv[c.argv.index("-p") + 1])
            if not _wait_for_port(port, 60):
                log.error("the code server did not open port %d; see %s", port, c.log_path)
    deadline = time.monotonic() + stop_after if stop_after else None
    while not stopping and (deadline is None or time.monotonic() < deadline):
        now = time.monotonic()
        for c in children:
            if c.held:
                continue
            if c.proc is not None and c.proc.poll() is not None and c.restart_at is None:
                ran = now - c.started_at
                if ran > HEALTHY_AFTER:
                    c.backoff = 1.0
                c.last_exit_code, c.last_exit_at = c.proc.returncode, _now()
                cause = describe_exit(c.proc.returncode)[2]
                if c.name in held_down:
                    c.held = True
                    log.warning("%s %s after %.0fs; held down by KALSHI_SHADOW_NO_RESTART, not restarting", c.name, cause, ran)
                    if run is not None:
                        run.log_exit(c, ran, None)
                    save()
                    continue
                c.exit_times = [t for t in c.exit_times if now - t <= loop_window] + [now]
                if not c.crash_loop and len(c.exit_times) > loop_restarts:
                    c.crash_loop, c.crash_loop_since = True, _now()
                    log.error("%s is in a crash loop: %d exits in %.0f min; restarting every %.0fs at most (see %s)",
                              c.name, len(c.exit_times), loop_window / 60, loop_backoff, c.log_path)
                    if run is not None:
                        run.append({"ts": c.crash_loop_since, "kind": "crash_loop", "child": c.name, "pid": c.proc.pid,
                                    "exits": len(c.exit_times), "window_minutes": loop_window / 60,
                                    "threshold": loop_restarts, "last_exit_code": c.last_exit_code,
                                    "cause": cause, "restarts": c.restarts, "backoff_seconds": loop_backoff,
                                    "log": str(c.log_path)})
                delay = max(c.backoff, loop_backoff) if c.crash_loop else c.backoff
                c.restart_at = now + delay
                c.restart_at_utc = datetime.fromtimestamp(time.time() + delay, timezone.utc).isoformat()
                log.warning("%s %s after %.0fs; restarting in %.0fs (see %s)", c.name, cause, ran, delay, c.log_path)
                if run is not None:
                    run.log_exit(c, ran, delay)
                save()
                c.backoff = min(c.backoff * 2, BACKOFF_MAX)
            if c.restart_at is not None and now >= c.restart_at:
                c.restarts += 1
                c.start()
                save()
            if c.crash_loop and c.restart_at is None and now - c.started_at > HEALTHY_AFTER:
                log.info("%s has stayed up for %.0fs: crash loop over", c.name, HEALTHY_AFTER)
                if run is not None:
                    run.append({"ts": _now(), "kind": "crash_loop_recovered", "child": c.name, "pid": c.proc.pid,
                                "since": c.crash_loop_since, "restarts": c.restarts})
                c.crash_loop, c.crash_loop_since, c.exit_times = False, None, []
                save()
        time.sleep(0.5)
    log.info("stopping %d children", len(children))
    # Consumers first, the simulator last, so collectors do not record its shutdown as a disconnect.
    _stop([c for c in children if c.name != "sim"], grace)
    _stop([c for c in children if c.name == "sim"], grace)
    for c in children:
        if c.proc is not None and c.restart_at is None and not c.held:
            c.last_exit_code, c.last_exit_at = c.proc.returncode, _now()
    save(stopped=True)
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
    ap.add_argument("--sim", action="store_true", help="use the simulator even if Kalshi credentials are set (it then checks "
                                                       "their signatures, and the keyed streams run against it)")
    ap.add_argument("--real", action="store_true", help="record the real markets (Kalshi's public REST market data and the spot "
                                                        "venues' public feeds) even without credentials; keys add the "
                                                        "WebSocket streams")
    ap.add_argument("--fast-clock", action="store_true", help="simulator cadence: 15-minute markets every 2 min, hourly ones every 5 min")
    ap.add_argument("--data-dir", type=Path, help="overrides KALSHI_SHADOW_DATA_DIR")
    ap.add_argument("--dagster-port", type=int, default=3000)
    ap.add_argument("--code-server-port", type=int, default=0, help="the Dagster code server's port (default: a free one)")
    ap.add_argument("--kalshi-port", type=int, default=8765, help="simulator REST port")
    ap.add_argument("--coinbase-port", type=int, default=8766, help="simulator Coinbase WebSocket port")
    ap.add_argument("--kraken-port", type=int, default=0, help="simulator Kraken WebSocket port (default: Coinbase's + 1)")
    ap.add_argument("--bitstamp-port", type=int, default=0, help="simulator Bitstamp WebSocket port (default: Coinbase's + 2)")
    ap.add_argument("--kalshi-ws-port", type=int, default=0, help="simulator Kalshi WebSocket port (default: Coinbase's + 3)")
    ap.add_argument("--no-dagster", action="store_true", help="only the simulator and the collectors")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = run until Ctrl-C)")
    args = ap.parse_args(argv)
    if args.real and (args.sim or args.fast_clock):
        ap.error("--real records the real markets: it cannot be combined with --sim or --fast-clock")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s up %(levelname)s %(message)s")
    if args.data_dir:
        os.environ["KALSHI_SHADOW_DATA_DIR"] = str(args.data_dir.resolve())
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"kalshi-shadow up: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(settings.data_dir)
    if not run.try_lock():
        other = (run.read_state() or {}).get("pid", "unknown")
        print(f"kalshi-shadow up: already running for data directory {settings.data_dir} (up pid {other}); "
              "stop it first or use another --data-dir", file=sys.stderr)
        return EXIT_LOCKED
    stop_orphans(run.read_state())
    if not args.no_dagster:
        _prepare_dagster_home(settings.dagster_home)
    children = build_children(args, settings)
    for line in banner(args, settings):
        print(line)
    print(f"  data:      {settings.data_dir}  (warehouse {settings.db_path})")
    print(f"  logs:      {settings.log_path}")
    if not args.no_dagster:
        print(f"  Dagster:   http://127.0.0.1:{args.dagster_port}")
    print("  Ctrl-C stops everything.", flush=True)
    run.write_state(children)
    return supervise(children, stop_after=args.seconds or None, run=run)
