"""Raw loads that never lose or double data: corrupt pages quarantined, duplicate rows loaded once, hourly
compaction that keeps every row and the exactly-once ledger, and writer frontiers that wait for missing files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl

from kalshi_shadow.raw.schemas import RAW_SCHEMAS
from kalshi_shadow.raw.store import list_raw_files, write_batch_atomically
from kalshi_shadow.warehouse.compaction import archive_dir, compact_loaded
from kalshi_shadow.warehouse.connection import open_warehouse
from kalshi_shadow.warehouse.frontier import table_frontier
from kalshi_shadow.warehouse.loader import load_new_files

T0 = datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)


def _ticks(first_trade: int, n: int, at: datetime) -> pl.DataFrame:
    rows = [{"ts": at + timedelta(seconds=i), "received_ts": at + timedelta(seconds=i, milliseconds=100), "product_id": "BTC-USD",
             "sequence": 10 * (first_trade + i), "trade_id": first_trade + i, "price": Decimal("95000.5") + i} for i in range(n)]
    return pl.DataFrame(rows, schema=RAW_SCHEMAS["spot_ticks"])


def _file(raw: Path, df: pl.DataFrame, stamp: datetime, writer: str, seq: int, table: str = "spot_ticks") -> Path:
    return write_batch_atomically(df, raw / table / f"date={stamp:%Y-%m-%d}", f"{stamp:%Y%m%dT%H%M%S%f}-{writer}-{seq:06d}")


def test_a_file_with_corrupt_pages_is_quarantined_and_loading_goes_on(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    good = _file(raw, _ticks(1, 50, T0), T0 + timedelta(minutes=1), "w", 1)
    bad = _file(raw, _ticks(100, 2000, T0 + timedelta(minutes=1)), T0 + timedelta(minutes=2), "w", 2)
    later = _file(raw, _ticks(5000, 50, T0 + timedelta(minutes=2)), T0 + timedelta(minutes=3), "w", 3)
    data = bytearray(bad.read_bytes())
    for i in range(200, len(data) // 2, 7):  # garble the pages; the footer (at the end) stays intact
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        assert conn.execute("SELECT num_rows FROM parquet_file_metadata(?)", [str(bad)]).fetchall()[0][0] == 2000  # footer reads
        res = load_new_files(conn, raw, "spot_ticks")
        assert (res.files, res.rows, res.failed_files) == (2, 100, [str(bad.relative_to(raw))])
        assert not bad.exists() and (raw / "_quarantine" / bad.relative_to(raw)).exists()
        failure = conn.execute("SELECT error, writer, seq FROM raw_file_failures").fetchall()
        assert len(failure) == 1 and failure[0][0].startswith("quarantined:") and failure[0][1:] == ("w", 2)
        # The quarantined file counts as arrived: the writer's frontier is not held back by it.
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(minutes=3)
        assert load_new_files(conn, raw, "spot_ticks").files == 0
    assert good.exists() and later.exists()


def test_duplicate_raw_rows_load_once(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _file(raw, _ticks(1, 10, T0), T0 + timedelta(seconds=10), "a", 1)
    _file(raw, pl.concat([_ticks(5, 10, T0 + timedelta(seconds=4)), _ticks(5, 2, T0 + timedelta(seconds=4))]),
          T0 + timedelta(seconds=20), "a", 2)  # overlaps the first file, and repeats two rows within itself
    _file(raw, _ticks(1, 10, T0), T0 + timedelta(seconds=30), "b", 1)  # another writer re-sending the first file
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        res = load_new_files(conn, raw, "spot_ticks")
        assert (res.rows, res.duplicates) == (14, 18)
        assert conn.execute("SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM spot_ticks").fetchall() == [(14, 14, 1, 14)]
        _file(raw, _ticks(1, 3, T0), T0 + timedelta(seconds=40), "a", 3)  # and again in a later load
        assert load_new_files(conn, raw, "spot_ticks").rows == 0
        assert conn.execute("SELECT sum(row_count), sum(duplicate_rows) FROM raw_file_loads").fetchall() == [(35, 21)]


def test_a_hole_in_a_writers_sequence_holds_the_frontier_until_the_file_lands(tmp_path: Path, monkeypatch) -> None:
    raw = tmp_path / "raw"
    first = _file(raw, _ticks(1, 5, T0), T0 + timedelta(seconds=5), "w", 1)
    third = _file(raw, _ticks(11, 5, T0 + timedelta(seconds=10)), T0 + timedelta(seconds=15), "w", 3)
    stash = tmp_path / "stash.parquet"
    second = _file(tmp_path / "later", _ticks(6, 5, T0 + timedelta(seconds=5)), T0 + timedelta(seconds=10), "w", 2)
    second.rename(stash)
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        load_new_files(conn, raw, "spot_ticks")
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(seconds=5)  # file 2 is missing
        dest = raw / second.relative_to(tmp_path / "later")
        stash.rename(dest)
        load_new_files(conn, raw, "spot_ticks")
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(seconds=15)
        # A hole that never closes is given up on after the gap timeout, recorded, and the frontier moves on.
        _file(raw, _ticks(30, 2, T0 + timedelta(seconds=30)), T0 + timedelta(seconds=35), "w", 5)
        load_new_files(conn, raw, "spot_ticks")
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(seconds=15)
        monkeypatch.setenv("KALSHI_SHADOW_RAW_GAP_SECONDS", "0")
        _file(raw, _ticks(40, 2, T0 + timedelta(seconds=40)), T0 + timedelta(seconds=45), "w", 6)
        load_new_files(conn, raw, "spot_ticks")
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(seconds=45)
        assert conn.execute("SELECT seq, error FROM raw_file_failures").fetchall() == [(4, "never arrived: gap in the writer's sequence")]
    assert first.exists() and third.exists()


def test_a_hole_left_by_a_writer_that_then_died_still_times_out(tmp_path: Path, monkeypatch) -> None:
    """The writer never writes again, so only the other writers' loads can close its hole."""
    raw = tmp_path / "raw"
    _file(raw, _ticks(1, 5, T0), T0 + timedelta(seconds=5), "dead", 1)
    _file(raw, _ticks(11, 5, T0 + timedelta(seconds=10)), T0 + timedelta(seconds=15), "dead", 3)  # 2 never comes
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        load_new_files(conn, raw, "spot_ticks")
        _file(raw, _ticks(20, 5, T0 + timedelta(seconds=20)), T0 + timedelta(seconds=25), "next", 1)
        load_new_files(conn, raw, "spot_ticks")
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(seconds=5)  # held back by the hole
        monkeypatch.setenv("KALSHI_SHADOW_RAW_GAP_SECONDS", "0")
        load_new_files(conn, raw, "spot_ticks")  # nothing new at all: the hole still times out
        assert table_frontier(conn, "spot_ticks") == T0 + timedelta(seconds=25)
        assert conn.execute("SELECT writer, seq FROM raw_file_failures").fetchall() == [("dead", 2)]


def test_compaction_keeps_every_row_and_the_ledger_exact(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for i in range(12):  # two closed hours of files, and one in the current hour
        _file(raw, _ticks(100 * i, 5, T0 + timedelta(minutes=10 * i)), T0 + timedelta(minutes=10 * i, seconds=5), "w", i + 1)
    now = T0 + timedelta(hours=1, minutes=58)
    with open_warehouse(tmp_path / "w.duckdb") as conn:
        assert load_new_files(conn, raw, "spot_ticks").rows == 60
        # A crash earlier left an archive nobody's ledger row names: it must not survive next to the real one.
        stray = archive_dir(raw) / "spot_ticks" / "date=2026-07-01" / "10-deadbeef0000.parquet"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"half written")
        counts = compact_loaded(conn, raw, "spot_ticks", now=now)
        assert counts == {"archives": 1, "files_compacted": 6}  # 10:xx only; 11:xx closed < 5 min ago stays
        assert not stray.exists()
        assert len(list_raw_files(raw, "spot_ticks")) == 6
        archives = sorted(archive_dir(raw).rglob("*.parquet"))
        archived_rows = conn.execute("SELECT count(*), count(DISTINCT trade_id) FROM read_parquet(?)", [[str(p) for p in archives]]).fetchall()
        assert archived_rows == [(30, 30)]
        assert conn.execute("SELECT count(*) FROM raw_file_loads WHERE archived_to IS NOT NULL").fetchall()[0][0] == 6
        assert compact_loaded(conn, raw, "spot_ticks", now=now + timedelta(minutes=10))["files_compacted"] == 6
        assert list_raw_files(raw, "spot_ticks") == []
        # Nothing is loaded twice and nothing is lost.
        assert load_new_files(conn, raw, "spot_ticks").files == 0
        all_archived = [str(p) for p in archive_dir(raw).rglob("*.parquet")]
        assert conn.execute("SELECT count(*) FROM read_parquet(?)", [all_archived]).fetchall()[0][0] == 60
        assert conn.execute("SELECT count(*) FROM spot_ticks").fetchall()[0][0] == 60
