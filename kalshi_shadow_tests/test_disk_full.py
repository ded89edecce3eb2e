"""A full disk loses nothing: a write that fails keeps its batch and its sequence number and is retried, so once
space returns the rows land in the next file of a gap-free sequence, and the collectors stay up meanwhile.

Tested on a real small filesystem: a tmpfs mounted by the test (root). Where mounting is not allowed the writes
really fail another way: the writing processes get RLIMIT_FSIZE 0 (`prlimit`, SIGXFSZ ignored as CPython does, so a
write fails with EFBIG) and their soft limit is raised again to let space "return"; the writer then runs in a child
process so pytest's own files are unaffected. `KALSHI_SHADOW_TEST_SMALL_DISK=rlimit` forces that fallback.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import polars as pl
import pytest
from websockets.sync.client import connect

from collectors.health import read_health
from kalshi_shadow.raw import RawWriter, list_raw_files
from kalshi_shadow.raw.store import PARTIAL_SUFFIX, RawFileName
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow_tests.waiting import wait_for

REPO = Path(__file__).parents[1]
T0 = datetime(2026, 7, 29, 4, 0, tzinfo=timezone.utc)


# ---- the small disk -------------------------------------------------------------------------------------------------
class SmallDisk:
    """A directory whose filesystem the test can fill and free.

    tmpfs: `fill()` writes a filler file until ENOSPC, `free()` deletes it; every process writing there sees it.
    rlimit: `fill()` sets RLIMIT_FSIZE 0 on every `attach`ed process, `free()` restores their limit."""

    def __init__(self, path: Path, mode: str) -> None:
        self.path = path
        self.mode = mode
        self.full = False
        self._pids: list[int] = []
        self._filler = path / ".filler"

    @property
    def error(self) -> str:
        return "ENOSPC" if self.mode == "tmpfs" else "EFBIG"

    def attach(self, pid: int) -> None:
        self._pids.append(pid)
        if self.full:
            self._limit(pid, 0)

    def _limit(self, pid: int, soft: int | None) -> None:
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard if soft is None else soft, hard))

    def fill(self) -> None:
        if self.mode == "rlimit":
            for pid in self._pids:
                self._limit(pid, 0)
        else:
            fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
                    try:
                        while True:
                            os.write(fd, chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
            finally:
                os.close(fd)
            assert os.statvfs(self.path).f_bavail == 0
        self.full = True

    def free(self) -> None:
        if self.mode == "rlimit":
            for pid in self._pids:
                try:
                    self._limit(pid, None)
                except ProcessLookupError:
                    pass
        else:
            self._filler.unlink()
        self.full = False


def _mount_tmpfs(where: Path) -> bool:
    if os.environ.get("KALSHI_SHADOW_TEST_SMALL_DISK") == "rlimit" or shutil.which("mount") is None:
        return False
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and os.path.ismount(where)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    where = tmp_path / "disk"
    where.mkdir()
    mounted = _mount_tmpfs(where)
    try:
        yield SmallDisk(where, "tmpfs" if mounted else "rlimit")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


# ---- A: the writer ----------------------------------------------------------------------------------------------------
def _tick(n: int) -> dict[str, Any]:
    return {"ts": T0 + timedelta(milliseconds=n), "product_id": "BTC-USD", "sequence": n, "trade_id": n,
            "price": Decimal(f"64000.{n:08d}")}


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _state(w: RawWriter, logs: _Logs, path: Path | None = None) -> dict[str, Any]:
    return {"path": str(path) if path else None, "pending": w.pending, "seq": w.seq, "failing": w.failing,
            "write_failures": w.write_failures, "rows_flushed": w.rows_flushed, "files_written": w.files_written,
            "last_write_error": w.last_write_error, "logs": list(logs.lines)}


def _serve(w: RawWriter, logs: _Logs, clock: list[datetime], cmd: dict[str, Any]) -> dict[str, Any]:
    """One command of the writer's driver (the same in-process and in the child)."""
    path = None
    if cmd["op"] == "append":
        for n in cmd["n"]:
            path = w.append(_tick(n)) or path
    elif cmd["op"] == "flush":
        path = w.flush(heartbeat=cmd.get("heartbeat", False))
    elif cmd["op"] == "maybe_flush":
        path = w.maybe_flush()
    elif cmd["op"] == "clock":
        clock[0] = datetime.fromisoformat(cmd["at"])
    return _state(w, logs, path)


CHILD = """
import json, logging, sys
from datetime import datetime
from kalshi_shadow.raw import RawWriter
from kalshi_shadow_tests.test_disk_full import T0, _Logs, _serve
logs = _Logs()
logging.getLogger("kalshi_shadow.raw.store").addHandler(logs)
clock = [T0]
w = RawWriter(sys.argv[1], "spot_ticks", flush_rows=10**6, flush_seconds=3600, writer_id="w", clock=lambda: clock[0])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    print(json.dumps(_serve(w, logs, clock, json.loads(line))), flush=True)
"""


class Driver:
    """A RawWriter on the small disk: in this process on tmpfs, in a child process under the rlimit."""

    def __init__(self, disk: SmallDisk) -> None:
        self.raw = disk.path / "raw"
        self.child: subprocess.Popen | None = None
        if disk.mode == "tmpfs":
            self.logs = _Logs()
            logging.getLogger("kalshi_shadow.raw.store").addHandler(self.logs)
            self.clock = [T0]
            clock = self.clock
            self.w = RawWriter(self.raw, "spot_ticks", flush_rows=10**6, flush_seconds=3600, writer_id="w",
                               clock=lambda: clock[0])
        else:
            self.child = subprocess.Popen([sys.executable, "-c", CHILD, str(self.raw)], cwd=REPO, text=True,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert json.loads(self.child.stdout.readline()) == {"ready": True}
            disk.attach(self.child.pid)

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        cmd = {"op": op, **kw}
        if self.child is None:
            return _serve(self.w, self.logs, self.clock, cmd)
        self.child.stdin.write(json.dumps(cmd) + "\n")
        self.child.stdin.flush()
        return json.loads(self.child.stdout.readline())

    def close(self) -> None:
        if self.child is None:
            logging.getLogger("kalshi_shadow.raw.store").removeHandler(self.logs)
        else:
            self.child.stdin.close()
            assert self.child.wait(timeout=10) == 0


def _partials(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{PARTIAL_SUFFIX}"))


def test_a_failed_flush_keeps_its_rows_and_sequence_number_until_space_returns(disk: SmallDisk) -> None:
    w = Driver(disk)
    try:
        first = w("append", n=list(range(1, 51)))
        assert w("flush")["seq"] == 1 and first["pending"] == 50

        disk.fill()
        s = w("append", n=list(range(51, 101)))
        assert s["pending"] == 50
        s = w("flush")
        assert s["path"] is None and s["failing"] and s["write_failures"] == 1
        assert s["seq"] == 1 and s["pending"] == 50 and s["rows_flushed"] == 50  # nothing consumed, nothing dropped
        assert disk.error in s["last_write_error"] and str(disk.path) in s["last_write_error"]
        assert _partials(disk.path) == [] and len(list_raw_files(w.raw, "spot_ticks")) == 1
        w("append", n=list(range(101, 151)))  # rows arriving meanwhile go after the held batch
        for _ in range(3):
            s = w("flush")
            assert s["path"] is None
        s = w("maybe_flush")  # right after a failure: no new attempt yet (no hammering of a full disk)
        assert s["write_failures"] == 4 and s["pending"] == 100 and s["seq"] == 1
        errors = [line for line in s["logs"] if line.startswith("ERROR")]
        assert len(errors) == 1 and disk.error in errors[0] and "keeping its 50 rows" in errors[0]  # one line, not four
        s = w("flush", heartbeat=True)  # a heartbeat with rows held is just the retry
        assert s["path"] is None and s["seq"] == 1 and _partials(disk.path) == []

        disk.free()
        w("clock", at=(T0 + timedelta(minutes=5)).isoformat())
        s = w("flush")
        assert s["path"] and not s["failing"] and s["pending"] == 0 and s["seq"] == 2 and s["rows_flushed"] == 150
        name = RawFileName.parse(Path(s["path"]).name)
        assert name == RawFileName(T0 + timedelta(minutes=5), "w", 2)  # named when it was written: the promise holds
        assert "writing works again: 100 rows held through 5 failed attempts" in s["logs"][-1]

        disk.fill()  # a heartbeat that fails consumes no number either, and is simply retried
        s = w("flush", heartbeat=True)
        assert s["path"] is None and s["failing"] and s["seq"] == 2 and s["pending"] == 0
        disk.free()
        w("clock", at=(T0 + timedelta(minutes=6)).isoformat())
        s = w("flush", heartbeat=True)
        assert s["path"] and s["seq"] == 3 and not s["failing"]
    finally:
        if disk.full:
            disk.free()
        w.close()
    files = list_raw_files(w.raw, "spot_ticks")
    assert [RawFileName.parse(f.name).seq for f in files] == [1, 2, 3]
    assert [pl.read_parquet(f).height for f in files] == [50, 100, 0]
    ticks = pl.concat([pl.read_parquet(f) for f in files])
    assert ticks["sequence"].to_list() == list(range(1, 151))  # exactly the rows appended, in order
    assert ticks["price"].to_list() == [_tick(n)["price"] for n in range(1, 151)]
    assert _partials(disk.path) == []


# ---- B and C: real collector processes ------------------------------------------------------------------------------
class Proc:
    """A collector process with its log read from a pipe (never from the small disk)."""

    def __init__(self, disk: SmallDisk, command: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("KALSHI_API_KEY_ID", "KALSHI_PRIVATE_KEY_PATH")}
        self.p = subprocess.Popen([sys.executable, "-m", "kalshi_shadow.cli", command, "--data-dir", str(disk.path), *args],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        disk.attach(self.p.pid)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.p.stdout), daemon=True)
        self._reader.start()

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=15)
        finally:
            self._reader.join(5)


class FeedRecorder:
    """A second subscriber to the simulator's feed: every ticker the collector was sent, to compare with its files."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.trade_ids: list[int] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the recorder could not subscribe"

    def _run(self) -> None:
        with connect(self.url) as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "heartbeat"]}))
            assert json.loads(ws.recv(timeout=5))["type"] == "subscriptions"
            self._ready.set()
            while not self._stop.is_set():
                try:
                    msg = json.loads(ws.recv(timeout=0.2))
                except TimeoutError:
                    continue
                if msg.get("type") == "ticker":
                    self.trade_ids.append(msg["trade_id"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _health(disk: SmallDisk, name: str) -> dict:
    return read_health(disk.path).get(name, {})


def _seqs_by_writer(disk: SmallDisk, table: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for f in list_raw_files(disk.path / "raw", table):
        name = RawFileName.parse(f.name)
        out.setdefault(name.writer, []).append(name.seq)
    return out


def _rows(disk: SmallDisk, table: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for f in list_raw_files(disk.path / "raw", table)])


def _ride_out_a_full_disk(disk: SmallDisk, proc: Proc, failing: str, seconds: float = 3.0) -> None:
    """Fill the disk until the collector reports `failing` writes, keep it full a while, check it lived, free it."""
    disk.fill()
    try:
        wait_for(lambda: f"{failing}: could not write" in proc.log(), timeout=10, what=f"a failed {failing} write")
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            assert proc.p.poll() is None, proc.log()
            time.sleep(0.2)
    finally:
        disk.free()


def test_the_spot_collector_rides_out_a_full_disk_without_losing_a_trade(sim: SimHandle, disk: SmallDisk) -> None:
    recorder = FeedRecorder(sim.coinbase_ws_url)
    proc = Proc(disk, "collect-spot", "--url", sim.coinbase_ws_url, "--flush-seconds", "0.3")
    try:
        wait_for(lambda: _health(disk, "spot").get("rows_acknowledged", 0) > 10, what="spot rows on disk")
        _ride_out_a_full_disk(disk, proc, "spot_ticks")
        past = sim.feed.trade_id["BTC-USD"] + 20
        wait_for(lambda: _health(disk, "spot").get("errors", {}).get("write_failed", 0) >= 1
                 and max(_rows(disk, "spot_ticks")["trade_id"]) > past, what="the collector to catch up")
    finally:
        code = proc.stop()
        recorder.stop()
    assert code == 0, proc.log()
    h = _health(disk, "spot")
    assert h["status"] == "stopped" and h["write_failing"] == {} and h["errors"]["write_failed"] >= 1
    assert h["reconnects"] == 0 and (h["gaps"], h["missed_messages"]) == (0, 0)
    # One gap-free sequence per writer (the ticks' and the events'), every file readable, no .partial left.
    for table in ("spot_ticks", "collector_events"):
        (seqs,) = _seqs_by_writer(disk, table).values()
        assert seqs == list(range(1, len(seqs) + 1)), (table, seqs)
    assert _partials(disk.path) == []
    ticks = _rows(disk, "spot_ticks")
    ids = ticks["trade_id"].to_list()
    assert ticks.height == h["rows_acknowledged"] and ids == sorted(set(ids))
    # Every ticker the feed sent while the collector was connected is in its files: none lost to the full disk.
    assert [t for t in recorder.trade_ids if ids[0] <= t <= ids[-1]] == ids
    events = _rows(disk, "collector_events").filter(pl.col("kind") == "write_failed")
    assert events["count"].sum() == h["errors"]["write_failed"]
    assert any(d.startswith("spot_ticks: ") and disk.error in d for d in events["detail"])
    log = proc.log()
    assert log.count("spot_ticks: could not write") == 1 and "spot_ticks: writing works again" in log
    assert "Traceback" not in log


def test_the_quote_collector_rides_out_a_full_disk_without_losing_a_cycle(sim: SimHandle, disk: SmallDisk) -> None:
    proc = Proc(disk, "collect-quotes", "--base-url", sim.kalshi_base_url, "--interval", "0.4")
    try:
        wait_for(lambda: _health(disk, "quotes").get("counters", {}).get("cycles", 0) >= 2, what="quote cycles")
        _ride_out_a_full_disk(disk, proc, "kalshi_quotes")
        wait_for(lambda: _health(disk, "quotes").get("errors", {}).get("write_failed", 0) >= 1
                 and not _health(disk, "quotes").get("write_failing"), what="the poller to catch up")
    finally:
        code = proc.stop()
    assert code == 0, proc.log()
    h = _health(disk, "quotes")
    assert h["status"] == "stopped" and h["write_failing"] == {} and h["errors"]["write_failed"] >= 3
    assert "cycle_error" not in h["errors"] and "poll_error" not in h["errors"]
    for table in ("kalshi_quotes", "kalshi_markets", "kalshi_series", "collector_events"):
        (seqs,) = _seqs_by_writer(disk, table).values()
        assert seqs == list(range(1, len(seqs) + 1)), (table, seqs)
    assert _partials(disk.path) == []
    quotes = _rows(disk, "kalshi_quotes")
    assert quotes.height == h["rows_acknowledged"] > 0
    # One page per series per cycle, each with its own request time: every successful poll is in the files.
    assert quotes.select("series_ticker", "ts").unique().height == h["messages"] >= 3 * h["counters"]["cycles"] - 3
    assert set(quotes["ticker"]) <= set(_rows(disk, "kalshi_markets")["ticker"])
    assert _rows(disk, "kalshi_series").height == h["series_rows_acknowledged"] >= 3
    log = proc.log()
    for table in ("kalshi_quotes", "kalshi_markets", "kalshi_series"):
        assert log.count(f"{table}: could not write") == 1 and f"{table}: writing works again" in log
    assert "Traceback" not in log


def test_a_collector_stopped_while_the_disk_is_full_says_what_it_could_not_write(sim: SimHandle, disk: SmallDisk) -> None:
    proc = Proc(disk, "collect-spot", "--url", sim.coinbase_ws_url, "--flush-seconds", "0.3")
    try:
        wait_for(lambda: _health(disk, "spot").get("rows_acknowledged", 0) > 10, what="spot rows on disk")
        disk.fill()
        wait_for(lambda: "spot_ticks: could not write" in proc.log(), timeout=10, what="a failed write")
        code = proc.stop()
    finally:
        if proc.p.poll() is None:
            proc.stop()
        if disk.full:
            disk.free()
    assert code == 0, proc.log()
    log = proc.log()
    assert "spot_ticks: " in log and "rows could not be written and are lost with this exit" in log
    assert "Traceback" not in log
    (seqs,) = _seqs_by_writer(disk, "spot_ticks").values()
    assert seqs == list(range(1, len(seqs) + 1)) and _partials(disk.path) == []
