"""Warehouse readers (`kalshi_shadow.connect`, `kalshi-shadow sql`) on real DuckDB files and real processes.

The point of a reader is the one-process lock: it opens the file only while its own query runs, so a writer in another
process (a Dagster step) waits for one query at most, where a notebook holding a connection blocked it until timeout.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest

import kalshi_shadow
from kalshi_shadow.warehouse.connection import WarehouseLockedError, connect as open_file, open_warehouse
from kalshi_shadow.warehouse.readers import Reader

REPO = Path(__file__).resolve().parents[1]

INSERT_TICK = ("INSERT INTO spot_ticks (ts, product_id, trade_id, price, load_id) "
               "VALUES (?::TIMESTAMPTZ, 'BTC-USD', ?, ?, 1)")

# A separate process doing what a Dagster step does: open, one short write transaction, close; it records how long
# each open waited for the file. Prints a JSON report on stdout.
WRITER = r"""
import json, sys, time
from kalshi_shadow.warehouse.connection import connect
path, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
waits = []
for i in range(n):
    started = time.monotonic()
    conn = connect(path, timeout_seconds=timeout)
    waits.append(time.monotonic() - started)
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO spot_ticks (ts, product_id, trade_id, price, load_id) "
                     "VALUES (now(), 'BTC-USD', ?, 100000, 2)", [1000 + i])
        conn.execute("COMMIT")
    finally:
        conn.close()
    time.sleep(0.1)
print(json.dumps({"transactions": len(waits), "waits": waits}))
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A warehouse with the real schema and three spot ticks (the last at 02:30 UTC, the evening before in New York)."""
    path = tmp_path / "warehouse.duckdb"
    with open_warehouse(path) as conn:
        conn.executemany(INSERT_TICK, [
            ("2026-07-29 10:00:00+00", 1, 117000.5),
            ("2026-07-29 12:00:00+00", 2, 117100.25),
            ("2026-07-30 02:30:00+00", 3, 117200.0),
        ])
    return path


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kalshi_shadow.cli", "sql", *args], cwd=REPO,
                          env={**os.environ, "DB_PATH": str(db)}, capture_output=True, text=True, timeout=60)


def test_import_kalshi_shadow_stays_free_of_duckdb_and_dagster() -> None:
    code = ("import sys, kalshi_shadow\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('duckdb', 'dagster', 'polars'))\n"
            "assert not heavy, heavy\n"
            "assert kalshi_shadow.connect is kalshi_shadow.warehouse.readers.connect\n"
            "assert 'duckdb' in sys.modules and 'dagster' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_sql_returns_an_in_memory_frame_and_releases_the_file(db: Path) -> None:
    wh = kalshi_shadow.connect(db)
    assert isinstance(wh, Reader) and str(db) in repr(wh)
    ticks = wh.sql("SELECT trade_id, price::DOUBLE AS price, ts::DATE AS day FROM spot_ticks WHERE trade_id >= ? "
                   "ORDER BY trade_id", [2])
    assert isinstance(ticks, pl.DataFrame)
    # ts::DATE is the UTC day on every host: readers run in UTC like every other connection.
    assert ticks.to_dicts() == [
        {"trade_id": 2, "price": 117100.25, "day": date(2026, 7, 29)},
        {"trade_id": 3, "price": 117200.0, "day": date(2026, 7, 30)},
    ]
    # Nothing is left open: a writer gets the file straight away (no retries allowed).
    open_file(db, timeout_seconds=0).close()
    assert ticks["trade_id"].to_list() == [2, 3]  # the frame outlives the connection
    with kalshi_shadow.connect(db) as same:
        assert same.sql("SELECT $n::INT + 1 AS m", {"n": 41}).item() == 42
    assert wh.sql("SET threads = 1").is_empty()  # a statement without a result gives an empty frame


def test_sql_default_path_comes_from_db_path(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PATH", str(db))
    assert kalshi_shadow.connect().path == db.resolve()


def test_tables_lists_tables_with_row_counts_and_views(db: Path) -> None:
    tables = kalshi_shadow.connect(db).tables()
    assert tables.columns == ["name", "kind", "rows"]
    by_name = {row["name"]: row for row in tables.to_dicts()}
    assert by_name["spot_ticks"] == {"name": "spot_ticks", "kind": "table", "rows": 3}
    assert by_name["kalshi_quotes"]["rows"] == 0
    assert by_name["kalshi_edges"] == {"name": "kalshi_edges", "kind": "view", "rows": None}
    open_file(db, timeout_seconds=0).close()


def test_df_needs_pandas(db: Path) -> None:
    wh = kalshi_shadow.connect(db)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            wh.df("SELECT 1")
    else:
        assert wh.df("SELECT trade_id FROM spot_ticks ORDER BY 1")["trade_id"].tolist() == [1, 2, 3]


def test_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no warehouse at"):
        kalshi_shadow.connect(tmp_path / "nope.duckdb").sql("SELECT 1")
    assert not (tmp_path / "nope.duckdb").exists()


def test_cli_formats_and_errors(db: Path, tmp_path: Path) -> None:
    query = "SELECT trade_id, price, product_id FROM spot_ticks ORDER BY trade_id"
    table = _cli(db, query)
    assert table.returncode == 0, table.stderr
    assert "trade_id" in table.stdout and "117100.25" in table.stdout and "BTC-USD" in table.stdout
    assert table.stdout.rstrip().endswith("3 rows")

    limited = _cli(db, query, "--limit", "1")
    assert limited.returncode == 0 and "117000.5" in limited.stdout and "117100.25" not in limited.stdout
    assert limited.stdout.rstrip().splitlines()[-1].startswith("3 rows (1 shown")

    as_csv = _cli(db, query, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["trade_id"], float(r["price"]), r["product_id"]) for r in rows] == [
        ("1", 117000.5, "BTC-USD"), ("2", 117100.25, "BTC-USD"), ("3", 117200.0, "BTC-USD")]

    as_json = _cli(db, "SELECT trade_id, ['a', 'b'] AS reasons FROM spot_ticks ORDER BY 1 LIMIT 2", "--format", "json")
    assert json.loads(as_json.stdout) == [{"trade_id": 1, "reasons": ["a", "b"]}, {"trade_id": 2, "reasons": ["a", "b"]}]
    nested_csv = _cli(db, "SELECT ['a', 'b'] AS reasons", "--format", "csv")
    assert nested_csv.returncode == 0 and json.loads(next(csv.DictReader(io.StringIO(nested_csv.stdout)))["reasons"]) == ["a", "b"]

    bad = _cli(db, "SELECT * FROM no_such_table")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("kalshi-shadow sql: ") and "no_such_table" in bad.stderr

    write = _cli(db, "DELETE FROM spot_ticks")
    assert write.returncode == 1 and "read-only" in write.stderr
    assert kalshi_shadow.connect(db).sql("SELECT count(*) FROM spot_ticks").item() == 3

    missing = _cli(tmp_path / "nope.duckdb", "SELECT 1")
    assert missing.returncode == 1 and "no warehouse at" in missing.stderr


def test_cli_lock_timeout(db: Path) -> None:
    holder = open_file(db)  # a writer (or an old-style notebook) holding the file in this process
    try:
        started = time.monotonic()
        out = _cli(db, "SELECT 1", "--lock-timeout", "0.5")
    finally:
        holder.close()
    assert out.returncode == 1
    assert out.stderr.startswith("kalshi-shadow sql: ") and "stayed locked" in out.stderr and "close that connection" in out.stderr
    assert time.monotonic() - started < 30


def test_a_held_connection_blocks_a_writer(db: Path) -> None:
    """The problem readers solve, as a control for the next test: a notebook's open read-only connection makes a
    writer in another process wait out its whole timeout and fail."""
    notebook = open_file(db, read_only=True)
    try:
        out = subprocess.run([sys.executable, "-c", WRITER, str(db), "1", "1.0"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    finally:
        notebook.close()
    assert out.returncode != 0 and WarehouseLockedError.__name__ in out.stderr


def test_notebook_loop_never_holds_up_a_writer(db: Path) -> None:
    """A writer process does 30 short transactions while this process keeps querying through readers, pausing
    briefly between queries as a notebook does. No query fails, every transaction lands, and no write waits longer
    than the longest reader query plus 2 s: the writer's retry backoff, and its own process's scheduling on a box whose
    two cores run three test workers (with 1 s it failed once there at 1.46 s against a 0.21 s query)."""
    transactions = 30
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(transactions), "30"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    durations: list[float] = []
    errors: list[str] = []
    seen: list[int] = []
    deadline = time.monotonic() + 25
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                n = kalshi_shadow.connect(db, timeout_seconds=30).sql(
                    "SELECT count(*) AS n, max(price) AS top, max(ts) AS newest FROM spot_ticks")["n"].item()
                seen.append(n)
            except Exception as exc:  # any failure is the finding; keep going to see them all
                errors.append(repr(exc))
            durations.append(time.perf_counter() - started)
            time.sleep(0.05)
        out, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert writer.returncode == 0, err
    report = json.loads(out)
    waits = report["waits"]
    print(f"writer max wait {max(waits):.3f}s over {len(waits)} transactions; "
          f"{len(durations)} reader queries, longest {max(durations):.3f}s")
    assert errors == []
    assert report["transactions"] == transactions
    assert len(durations) >= 20, "the readers hardly overlapped the writer"
    assert seen == sorted(seen) and max(seen) > 3, "readers never saw the writer's rows while it ran"
    assert kalshi_shadow.connect(db).sql("SELECT count(*) FROM spot_ticks").item() == 3 + transactions
    assert max(waits) < max(durations) + 2.0, (
        f"writer waited {max(waits):.3f}s; the longest reader query took {max(durations):.3f}s "
        f"({len(durations)} queries)")
