"""Issue 16: the index proxy against an independent computation of its rules, with a venue 1% off, a venue silent
and every venue silent, in a real DuckDB file; and a grid written in pieces equals one written at once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np

from kalshi_shadow.pricing.index import (MAX_DEVIATION_BP, OFFICIAL_STALE_SECONDS, QUORUM, VENUE_STALE_SECONDS, VENUES,
                                         refresh_spot_index)
from kalshi_shadow.pricing.snapshots import price_new_quotes, refresh_spot
from kalshi_shadow.pricing.synthetic import generate, publish_until
from kalshi_shadow.warehouse.connection import utc
from kalshi_shadow.warehouse.ddl import ensure_schema

START = datetime(2026, 7, 1, tzinfo=timezone.utc)
STAGED = {"coinbase": "syn_spot", "kraken": "syn_kraken", "bitstamp": "syn_bitstamp"}


def _faulty_history(path: Path, official: bool = False) -> duckdb.DuckDBPyConnection:
    """40 minutes of three venues: Bitstamp 1% high in minutes 5-8, Kraken silent in 12-15, nobody in 20-22; with
    `official`, the official index too, down in minutes 25-28."""
    conn = utc(duckdb.connect(str(path)))
    ensure_schema(conn)
    generate(conn, START, 1, strikes=4, quote_every=10, official=official)
    m = lambda k: START + timedelta(minutes=k)  # noqa: E731
    conn.execute("UPDATE syn_bitstamp SET price = price * 1.01 WHERE ts >= ? AND ts < ?", [m(5), m(8)])
    conn.execute("DELETE FROM syn_kraken WHERE ts >= ? AND ts < ?", [m(12), m(15)])
    for table in STAGED.values():
        conn.execute(f"DELETE FROM {table} WHERE ts >= ? AND ts < ?", [m(20), m(22)])
    if official:
        conn.execute("DELETE FROM syn_official WHERE ts >= ? AND ts < ?", [m(25), m(28)])
    return conn


def _latest(conn: duckdb.DuckDBPyConnection, sql: str, seconds: np.ndarray, stale: float) -> np.ndarray:
    """Per second, the last value received at or before it if at most `stale` old, else NaN."""
    seen, value = conn.execute(sql).fetchnumpy().values()
    i = np.searchsorted(seen, seconds, side="right") - 1
    ok = (i >= 0) & (seconds - seen[np.maximum(i, 0)] <= stale)
    return np.where(ok, value[np.maximum(i, 0)], np.nan)


def _expected(conn: duckdb.DuckDBPyConnection, seconds: np.ndarray) -> list[tuple]:
    """The rules in numpy, from the staged trades: per second, each venue's last price received at or before it,
    fresh if at most VENUE_STALE_SECONDS old; the ones further than MAX_DEVIATION_BP from the fresh median out."""
    latest = {v: _latest(conn, f"SELECT epoch(received_ts), price::DOUBLE FROM {STAGED[v]} ORDER BY 1", seconds, VENUE_STALE_SECONDS)
              for v in VENUES}
    rows = []
    for k, t in enumerate(seconds):
        fresh = {v: latest[v][k] for v in VENUES if not np.isnan(latest[v][k])}
        med = np.median(list(fresh.values())) if fresh else np.nan
        used = {v: p for v, p in fresh.items() if abs(p / med - 1) * 1e4 <= MAX_DEVIATION_BP}
        excluded = sorted(set(fresh) - set(used))
        source = None if not used else ("proxy" if len(used) >= QUORUM else next(iter(used)))
        rows.append((int(t), round(float(np.median(list(used.values()))), 6) if used else None, source, len(used), excluded))
    return rows


def _actual(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return [(int(t), None if p is None else round(p, 6), s, n, sorted(x))
            for t, p, s, n, x in conn.execute("SELECT epoch(ts), proxy::DOUBLE, source, n_venues, excluded FROM spot_index ORDER BY ts").fetchall()]


def test_the_proxy_follows_its_rules_through_a_wrong_venue_a_silent_venue_and_silence(tmp_path: Path) -> None:
    conn = _faulty_history(tmp_path / "w.duckdb")
    publish_until(conn, START + timedelta(minutes=40), load_id=1)
    written = refresh_spot_index(conn)
    actual = _actual(conn)
    assert written == len(actual) > 2300
    assert conn.execute("SELECT count(*) FROM spot_index WHERE price IS DISTINCT FROM proxy OR official IS NOT NULL").fetchall() == [(0,)]
    assert actual == _expected(conn, np.array([t for t, *_ in actual], dtype=float))
    by_minute = {}
    for t, price, source, n, excluded in actual:
        by_minute.setdefault((t - int(START.timestamp())) // 60, []).append((price, source, n, excluded))
    assert all(x == ["bitstamp"] and s == "proxy" and n == 2 for _, s, n, x in by_minute[6])  # 1% off: out, counted
    assert all(s == "proxy" and n == 2 for _, s, n, _ in by_minute[13])  # Kraken silent: the other two
    assert all(p is None and s is None for p, s, _, _ in by_minute[21])  # nobody fresh: no price
    assert all(s == "proxy" and n == 3 for _, s, n, _ in by_minute[30])


def test_the_official_index_prices_where_fresh_and_the_proxy_is_kept_beside_it(tmp_path: Path) -> None:
    conn = _faulty_history(tmp_path / "w.duckdb", official=True)
    publish_until(conn, START + timedelta(minutes=40), load_id=1)
    refresh_spot_index(conn)
    rows = conn.execute("SELECT epoch(ts), price::DOUBLE, proxy::DOUBLE, official::DOUBLE, source, n_venues FROM spot_index ORDER BY ts").fetchall()
    seconds = np.array([r[0] for r in rows], dtype=float)
    official = _latest(conn, "SELECT epoch(received_ts), value::DOUBLE FROM syn_official ORDER BY 1", seconds, OFFICIAL_STALE_SECONDS)
    proxy = _expected(conn, seconds)
    for (t, price, prox, off, source, n), o, (_, p, psource, pn, _) in zip(rows, official, proxy):
        assert (prox is None) == (p is None) and (p is None or abs(prox - p) < 1e-6) and n == pn, t
        if np.isnan(o):  # the feed down: the proxy, with its own source
            assert off is None and source == psource and (price == prox or (price is None and p is None)), t
        else:  # fresh: the official value prices, whatever the venues did
            assert off == o and price == o and source == "official", t
    sources = {}
    for t, *_, source, _ in rows:
        sources.setdefault((int(t) - int(START.timestamp())) // 60, set()).add(source)
    assert sources[21] == {"official"}  # every venue silent: the official index still prices
    assert sources[26] == {"proxy"}  # the official feed down: back to the proxy
    assert sources[30] == {"official"}


def test_a_grid_extended_in_pieces_equals_one_written_at_once(tmp_path: Path) -> None:
    whole = _faulty_history(tmp_path / "whole.duckdb", official=True)
    publish_until(whole, START + timedelta(minutes=40), load_id=1)
    refresh_spot_index(whole)
    pieces = _faulty_history(tmp_path / "pieces.duckdb", official=True)
    for i, minutes in enumerate((3, 7, 13, 21, 22, 40), start=1):
        publish_until(pieces, START + timedelta(minutes=minutes), load_id=i)
        refresh_spot_index(pieces)
    every_column = "SELECT * FROM spot_index ORDER BY ts"
    assert pieces.execute(every_column).fetchall() == whole.execute(every_column).fetchall()


def test_a_quote_priced_on_one_venue_carries_index_degraded(tmp_path: Path) -> None:
    conn = utc(duckdb.connect(str(tmp_path / "w.duckdb")))
    ensure_schema(conn)
    generate(conn, START, 1, strikes=4, quote_every=10)
    conn.execute("DELETE FROM syn_kraken WHERE ts >= ?", [START + timedelta(minutes=30)])
    conn.execute("DELETE FROM syn_bitstamp WHERE ts >= ?", [START + timedelta(minutes=30)])
    publish_until(conn, START + timedelta(hours=1), load_id=1)
    refresh_spot(conn)
    price_new_quotes(conn, lot=100)
    rows = dict(((src, bool(deg)), n) for src, deg, n in conn.execute("""
        SELECT index_source, list_contains(reasons, 'index_degraded'), count(*) FROM kalshi_edge_snapshots
        WHERE spot IS NOT NULL GROUP BY ALL""").fetchall())
    assert rows.get(("proxy", True), 0) == 0 and rows[("proxy", False)] > 0
    assert rows[("coinbase", True)] > 0 and rows.get(("coinbase", False), 0) == 0
