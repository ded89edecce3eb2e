"""Closing a writer's connection: a small write stays in the WAL (no checkpoint, whose cost grows with the file),
and is there for every later opener; a large one is checkpointed into the file."""

from __future__ import annotations

from pathlib import Path

from kalshi_shadow.warehouse.connection import CHECKPOINT_MIN_WAL_BYTES, connect, open_warehouse


def test_a_small_write_stays_in_the_wal_and_every_opener_reads_it(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    wal = Path(f"{db}.wal")
    with open_warehouse(db) as conn:
        conn.execute("INSERT INTO asset_watermarks VALUES ('test_small', 7)")
    assert wal.exists() and 0 < wal.stat().st_size < CHECKPOINT_MIN_WAL_BYTES

    reader = connect(db, read_only=True)
    assert reader.execute("SELECT value FROM asset_watermarks WHERE asset = 'test_small'").fetchall() == [(7,)]
    reader.close()

    with open_warehouse(db) as conn:
        assert conn.execute("SELECT value FROM asset_watermarks WHERE asset = 'test_small'").fetchall() == [(7,)]
        conn.execute("CREATE TABLE big (i BIGINT, s VARCHAR)")
        for k in range(10):  # batches small enough to go through the WAL (a large one is written to the file directly)
            conn.execute("INSERT INTO big SELECT range, md5(range::VARCHAR) FROM range(?, ?)", [k * 20000, (k + 1) * 20000])
        assert wal.stat().st_size >= CHECKPOINT_MIN_WAL_BYTES
    assert not wal.exists() or wal.stat().st_size == 0, "a write past the threshold is checkpointed on close"

    reader = connect(db, read_only=True)
    assert reader.execute("SELECT count(*), max(i) FROM big").fetchall() == [(200000, 199999)]
    assert reader.execute("SELECT value FROM asset_watermarks WHERE asset = 'test_small'").fetchall() == [(7,)]
    reader.close()
