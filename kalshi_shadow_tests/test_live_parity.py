"""The live path equals its backfill whatever order the raw files arrive in.

Twenty minutes across a UTC midnight are written as the collectors would write them (one gap-free file sequence
per writer, a file per table per cycle, heartbeat files). They are then handed to the real `live_job`, run for
real after each delivery, in an adversarial order: quotes before their terms, spot late, the fee row late, a
spot file missing for a while (a hole in its writer's sequence), a quotes file for the earlier day arriving after
the next day started, and a raw row re-sent under another writer. A backfill of each day must equal the live rows.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from kalshi_shadow.definitions import defs
from kalshi_shadow.defs import pricing
from kalshi_shadow.defs.resources import Warehouse
from kalshi_shadow.raw.schemas import RAW_SCHEMAS
from kalshi_shadow.raw.store import write_batch_atomically
from kalshi_shadow.warehouse.connection import connect
from kalshi_shadow.models import model_names

START = datetime(2026, 7, 1, 23, 50, tzinfo=timezone.utc)
CYCLES = 240  # 5 s each: 20 minutes, ten of them after midnight
STEP = timedelta(seconds=5)


def _markets() -> list[dict]:
    """Two hourly 'greater' markets closing at 00:00 and 01:00, and two 15-minute markets whose strike is set 30 s in."""
    out = []
    for close in (datetime(2026, 7, 2, 0, 0, tzinfo=timezone.utc), datetime(2026, 7, 2, 1, 0, tzinfo=timezone.utc)):
        for k, strike in enumerate((94_999.99, 95_249.99)):
            out.append({"ticker": f"KXBTCD-{close:%H}-T{k}", "series_ticker": "KXBTCD", "strike_type": "greater", "floor": strike,
                        "open": close - timedelta(hours=1), "close": close, "strike_at": close - timedelta(hours=1)})
    for open_ in (datetime(2026, 7, 1, 23, 45, tzinfo=timezone.utc), datetime(2026, 7, 2, 0, 0, tzinfo=timezone.utc)):
        out.append({"ticker": f"KXBTC15M-{open_:%H%M}", "series_ticker": "KXBTC15M", "strike_type": "greater_or_equal",
                    "floor": 95_050.0, "open": open_, "close": open_ + timedelta(minutes=15), "strike_at": open_ + timedelta(seconds=30)})
    return out


def _name(stamp: datetime, writer: str, seq: int) -> str:
    return f"{stamp:%Y%m%dT%H%M%S%f}-{writer}-{seq:06d}"


def _write_all(stage: Path) -> list[tuple[datetime, str, Path]]:
    """Every raw file of the scenario as (flush time, table, path), written into `stage` with collector names."""
    rng = random.Random(7)
    files: list[tuple[datetime, str, Path]] = []
    seqs: dict[str, int] = {}

    def flush(table: str, writer: str, stamp: datetime, rows: list[dict]) -> None:
        seqs[writer] = seqs.get(writer, 0) + 1
        df = pl.DataFrame(rows, schema=RAW_SCHEMAS[table])
        path = write_batch_atomically(df, stage / table / f"date={stamp:%Y-%m-%d}", _name(stamp, writer, seqs[writer]))
        files.append((stamp, table, path))

    price, trade = 95_100.0, 1000
    markets = _markets()
    seen_terms: dict[str, tuple] = {}
    for k in range(CYCLES):
        t = START + k * STEP
        ticks = []
        for i in range(5):  # one trade a second, received 200 ms after it happened
            price *= math.exp(rng.gauss(0, 0.0004))
            trade += 1
            ts = t - STEP + timedelta(seconds=i + 1)
            ticks.append({"ts": ts, "received_ts": ts + timedelta(milliseconds=200), "product_id": "BTC-USD", "sequence": trade * 7,
                          "trade_id": trade, "price": Decimal(f"{price:.2f}"), "side": "buy"})
        flush("spot_ticks", "spotw", t + timedelta(milliseconds=300), ticks)
        quotes, changed = [], []
        for m in markets:
            if not (m["open"] <= t < m["close"]):
                continue
            floor = m["floor"] if t >= m["strike_at"] else None
            terms = (m["strike_type"], floor)
            if seen_terms.get(m["ticker"]) != terms:
                seen_terms[m["ticker"]] = terms
                changed.append({"ts": t, "ticker": m["ticker"], "event_ticker": m["ticker"].rsplit("-", 1)[0],
                                "series_ticker": m["series_ticker"], "market_type": "binary", "status": "active",
                                "strike_type": m["strike_type"], "floor_strike": floor, "open_time": m["open"],
                                "close_time": m["close"], "raw_json": "{}"})
            mid = min(max(0.5 + rng.gauss(0, 0.25), 0.02), 0.97)
            bid = Decimal(f"{mid - 0.01:.2f}") if rng.random() > 0.1 else None
            ask = Decimal(f"{mid + 0.01:.2f}")
            quotes.append({"ts": t, "received_ts": t, "ticker": m["ticker"], "event_ticker": m["ticker"].rsplit("-", 1)[0],
                           "series_ticker": m["series_ticker"], "status": "active", "yes_bid": bid, "yes_ask": ask,
                           "no_bid": 1 - ask, "no_ask": 1 - bid if bid is not None else None,
                           "yes_bid_size": Decimal("10"), "yes_ask_size": Decimal("25"), "source": "rest_markets"})
        stamp = t + timedelta(milliseconds=500)  # the poller flushes every table at the end of its cycle
        flush("kalshi_quotes", "quotew", stamp, quotes)
        flush("kalshi_markets", "marketw", stamp, changed)
        series = [{"ts": t, "series_ticker": s, "title": s, "fee_type": "quadratic", "fee_multiplier": 1.0, "raw_json": "{}"}
                  for s in ("KXBTCD", "KXBTC15M")] if k == 0 else []
        flush("kalshi_series", "seriesw", stamp, series)
    return files


def _deliveries(files: list[tuple[datetime, str, Path]], ticks: int) -> list[list[Path]]:
    """Which files land before each live run: an adversarial order."""
    span = (CYCLES * STEP) / ticks
    plan: list[list[Path]] = [[] for _ in range(ticks + 1)]
    late_quotes = next(p for s, t, p in files if t == "kalshi_quotes" and s.hour == 23 and s.minute == 58)
    held_spot = next(p for s, t, p in files if t == "spot_ticks" and s.hour == 23 and s.minute == 52)
    for stamp, table, path in files:
        slot = min(int((stamp - START) / span), ticks - 1)
        if path == late_quotes:
            slot = ticks  # a file for the earlier day, after the next day is well under way
        elif path == held_spot:
            slot = 5  # a hole in the spot writer's sequence for several runs
        elif table == "kalshi_series" and stamp < START + STEP:
            slot = 3  # the fee row late
        elif table == "kalshi_markets":
            slot = min(slot + 1, ticks)  # quotes before their terms
        elif table == "spot_ticks":
            slot = min(slot + 2, ticks)  # spot late
        plan[slot].append(path)
    return plan


def _snapshots(db: Path) -> list[tuple]:
    conn = connect(db, read_only=True)
    try:
        rows = conn.execute("SELECT * EXCLUDE (created_at, snapshot_seq) FROM kalshi_edge_snapshots ORDER BY snapshot_id").fetchall()
    finally:
        conn.close()
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("chunk_quotes", ["400000", "150"])
def test_backfill_equals_live_whatever_order_the_files_arrive_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  chunk_quotes: str) -> None:
    monkeypatch.setenv("KALSHI_SHADOW_CHUNK_QUOTES", chunk_quotes)
    stage, raw, db = tmp_path / "stage", tmp_path / "raw", tmp_path / "w.duckdb"
    files = _write_all(stage)
    wh = Warehouse(database=str(db), raw_dir=str(raw))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("live_job")
    resent = next(p for s, t, p in files if t == "kalshi_quotes" and s.hour == 0 and s.minute == 3)
    resent_bytes = resent.read_bytes()

    def deliver(paths: list[Path]) -> None:
        for p in paths:
            dest = raw / p.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            p.rename(dest)

    def live_run(day: str) -> dg.ExecuteInJobResult:
        result = job.execute_in_process(instance=instance, partition_key=day, tags={pricing.LIVE_TAG: "live"},
                                        resources={"warehouse": wh})
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations() if c.asset_key.path == ["kalshi_edge_snapshots"]}
        assert checks["snapshot_id_unique"] and checks["no_spot_from_after_the_quote"], checks
        return result

    plan = _deliveries(files, ticks=8)
    priced_along_the_way = []
    for i, batch in enumerate(plan):
        deliver(batch)
        if i == 6:  # the same quotes re-sent by another writer (a restarted collector replaying its buffer)
            copy = raw / "kalshi_quotes" / resent.parent.name / (_name(datetime(2026, 7, 2, 0, 9, tzinfo=timezone.utc), "replay", 1) + ".parquet")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(resent_bytes)
        newest = max((p for p in batch), default=None, key=lambda p: p.name)
        day = "2026-07-02" if newest is None or newest.parent.name >= "date=2026-07-02" else "2026-07-01"
        live_run(day)
        if i in (4, len(plan) - 1):  # a second tick with nothing new changes nothing (while held, and at the end)
            live_run(day)
        priced_along_the_way.append(len(_snapshots(db)))
    # Nothing before the fee row lands (tick 3); held while a spot file is missing (tick 4), released when it lands.
    assert priced_along_the_way[:3] == [0, 0, 0] and 0 < priced_along_the_way[3] == priced_along_the_way[4] < priced_along_the_way[5]
    assert priced_along_the_way == sorted(priced_along_the_way)
    live = _snapshots(db)

    with duckdb.connect(str(db), read_only=True) as conn:
        quotes, dups = conn.execute("SELECT count(*), (SELECT sum(duplicate_rows) FROM raw_file_loads) FROM kalshi_quotes").fetchall()[0]
        days = [d.isoformat() for (d,) in conn.execute("SELECT DISTINCT quote_date FROM kalshi_edge_snapshots ORDER BY 1").fetchall()]
        no_terms = conn.execute("SELECT count(*) FROM kalshi_edge_snapshots WHERE list_contains(reasons, 'no_market_terms')").fetchall()[0][0]
        priced = conn.execute("SELECT count(p_model) FROM kalshi_edge_snapshots").fetchall()[0][0]
    assert dups > 0 and len(live) == len(model_names()) * quotes  # the re-sent rows loaded once; every quote priced by every model
    assert days == ["2026-07-01", "2026-07-02"]
    assert no_terms == 0 and priced > len(live) // 2  # terms that arrived late were waited for, not reported missing

    for day in days:  # a backfill of each day, as the UI launches it (no live tag: full recompute)
        result = dg.materialize([pricing.kalshi_edge_snapshots], partition_key=day, instance=instance, resources={"warehouse": wh},
                                tags={"dagster/backfill": "parity"})
        assert result.success
    assert _snapshots(db) == live
