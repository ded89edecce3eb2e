"""Issue 8, item 7: settlement reads that end. A ticker the exchange does not return, or one that never finalizes, is
read with growing gaps and given up on (flagged in DuckDB, warned by an asset check) once past the bound after close;
a normal ticker settles as before. Real simulator over HTTP, a real DuckDB file; time is driven through `now=`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from collectors.quotes import QuotePoller
from kalshi_shadow.defs import ingest, settlements
from kalshi_shadow.defs.resources import KalshiAPI, Warehouse
from kalshi_shadow.kalshi.client import KalshiClient
from kalshi_shadow.scoring.settlements import (ReadState, Skip, apply_observations, fetch_outcomes, give_up_after,
                                               plan_reads, retry_gap, track_reads)
from kalshi_shadow.sim.server import SimHandle
from kalshi_shadow.warehouse.connection import utc

MINUTE = timedelta(minutes=1)


def _setup(manual_sim: SimHandle, tmp_path: Path) -> tuple[Warehouse, KalshiAPI, str]:
    """Contracts for every open market (as in test_scores), and the KXBTCD ticker the tests follow."""
    poller = QuotePoller(KalshiClient(manual_sim.kalshi_base_url, reads_per_second=500), ["KXBTC15M", "KXBTCD", "KXBTC"], tmp_path)
    manual_sim.advance(40)
    poller.poll_once()
    poller._flush_if_due(force=True)
    wh = Warehouse(database=str(tmp_path / "w.duckdb"), raw_dir=str(tmp_path / "raw"))
    assert dg.materialize([*ingest.raw_assets, ingest.kalshi_contracts], resources={"warehouse": wh}).success
    ticker = next(m.ticker for m in manual_sim.exchange.markets() if m.series == "KXBTCD" and m.close_ts > manual_sim.clock.now())
    return wh, KalshiAPI(base_url=manual_sim.kalshi_base_url, reads_per_second=500), ticker


def _sim_now(manual_sim: SimHandle) -> datetime:
    return datetime.fromtimestamp(manual_sim.clock.now(), timezone.utc)


def _read(wh: Warehouse, api: KalshiAPI, now: datetime, since_seconds: int | None = None) -> tuple[list[str], list[Skip]]:
    """One run of the settlements asset at `now`: plan, read the exchange with no connection open, record."""
    with wh.get_connection() as conn:
        due, skipped = plan_reads(conn, now, since_seconds)
    with api.client() as client:
        observations = fetch_outcomes(client, due)
    with wh.get_connection() as conn:
        apply_observations(conn, observations, now)
        track_reads(conn, due, observations, now)
    return due, skipped


def _state(wh: Warehouse, ticker: str) -> ReadState:
    with wh.get_connection() as conn:
        return ReadState(*conn.execute("SELECT * FROM kalshi_settlement_reads WHERE ticker = ?", [ticker]).fetchone())


def _read_until_flagged(wh: Warehouse, api: KalshiAPI, ticker: str, now: datetime) -> list[datetime]:
    """Run whenever `ticker` is due (a schedule tick a minute on after a read with news) until it is flagged; returns
    the read times. Each time, a run one second before the ticker is due must skip it with a reason."""
    reads: list[datetime] = []
    while len(reads) < 200:
        due, _ = _read(wh, api, now)
        assert ticker in due
        reads.append(now)
        state = _state(wh, ticker)
        if state.flag:
            return reads
        if state.next_read_at > now:
            due, skipped = _read(wh, api, state.next_read_at - timedelta(seconds=1))
            assert ticker not in due
            skip = next(s for s in skipped if s.ticker == ticker)
            assert skip.flag is None and skip.reason.startswith("backing off until")
        now = max(state.next_read_at, now + MINUTE)
    raise AssertionError(f"{ticker} never flagged")


def _gaps(reads: list[datetime]) -> list[timedelta]:
    return [b - a for a, b in zip(reads, reads[1:])]


def _close(wh: Warehouse, ticker: str) -> datetime:
    with wh.get_connection() as conn:
        return conn.execute("SELECT close_ts FROM kalshi_contracts WHERE ticker = ?", [ticker]).fetchone()[0]


@pytest.mark.slow
def test_unknown_ticker_backs_off_then_is_flagged(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api, known = _setup(manual_sim, tmp_path)
    gone = known + "-GONE"  # a stored contract the exchange no longer knows
    with wh.get_connection() as conn:
        conn.execute("INSERT INTO kalshi_contracts SELECT * REPLACE (? AS ticker) FROM kalshi_contracts WHERE ticker = ?", [gone, known])
    manual_sim.advance(3600 + 61 + 300 + 60)  # every stored market closed, determined and finalized
    start = _sim_now(manual_sim)
    reads = _read_until_flagged(wh, api, gone, start)

    # Gaps double from a minute and are capped at an hour; the flag comes with the first read past the bound.
    gaps = _gaps(reads)
    assert gaps[:7] == [MINUTE * 2**i for i in range(6)] + [timedelta(hours=1)]
    assert set(gaps[6:]) == {timedelta(hours=1)}
    bound = _close(wh, gone) + give_up_after()
    assert reads[-2] < bound <= reads[-1]
    state = _state(wh, gone)
    assert (state.flag, state.reads, state.flagged_at, state.last_status) == ("unknown_to_exchange", len(reads), reads[-1], None)
    assert "not returned by the exchange" in state.flag_reason

    # Missing stays missing; the normal tickers settled on the first run and were not read again.
    with utc(duckdb.connect(wh.database)) as conn:
        assert conn.execute("SELECT outcome, settlement_value, settlement_status FROM kalshi_contracts WHERE ticker = ?",
                            [gone]).fetchone() == (None, None, None)
        outcome, status = conn.execute("SELECT outcome, settlement_status FROM kalshi_contracts WHERE ticker = ?", [known]).fetchone()
        reads_of_known = conn.execute("SELECT reads, flag FROM kalshi_settlement_reads WHERE ticker = ?", [known]).fetchone()
        flagged = conn.execute("SELECT ticker, flag, reads FROM kalshi_settlement_reads WHERE flag IS NOT NULL").fetchall()
    assert outcome == manual_sim.exchange.natural_result(manual_sim.exchange.market(known)) and status == "finalized"
    assert reads_of_known == (1, None)
    assert flagged == [(gone, "unknown_to_exchange", len(reads))]

    # Given up: never read again, and every run says why.
    due, skipped = _read(wh, api, reads[-1] + timedelta(days=30))
    assert gone not in due and [(s.ticker, s.flag) for s in skipped] == [(gone, "unknown_to_exchange")]
    assert _state(wh, gone).reads == len(reads)

    # The settlements asset warns while a ticker is flagged.
    result = dg.materialize([settlements.kalshi_settlements], resources={"warehouse": wh, "kalshi": api})
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_settlement_reads_given_up")
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert check.metadata["flagged_tickers"].value == 1


@pytest.mark.slow
def test_never_finalizing_ticker_backs_off_then_is_flagged(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api, stuck = _setup(manual_sim, tmp_path)
    manual_sim.set_outcome(stuck, "yes", status="determined")  # the simulator keeps an override status for good
    manual_sim.advance(3600 + 61 + 300 + 60)
    reads = _read_until_flagged(wh, api, stuck, _sim_now(manual_sim))

    # The first read brings the outcome (news: read again on the next run), then the same answer backs off.
    assert _gaps(reads)[:8] == [MINUTE] + [MINUTE * 2**i for i in range(6)] + [timedelta(hours=1)]
    assert reads[-2] < _close(wh, stuck) + give_up_after() <= reads[-1]
    state = _state(wh, stuck)
    assert (state.flag, state.reads, state.last_status, state.last_result) == ("never_finalized", len(reads), "determined", "yes")
    assert "still determined" in state.flag_reason
    with utc(duckdb.connect(wh.database)) as conn:
        assert conn.execute("SELECT outcome, settlement_status FROM kalshi_contracts WHERE ticker = ?", [stuck]).fetchone() == ("yes", "determined")
    later = reads[-1] + timedelta(days=1)
    assert stuck not in _read(wh, api, later)[0]

    # A since_seconds re-read still reads it; once the exchange finalizes it, the flag is cleared.
    manual_sim.set_outcome(stuck, "yes", status="finalized")
    assert stuck in _read(wh, api, later, since_seconds=4 * 86400)[0]
    state = _state(wh, stuck)
    assert (state.flag, state.flagged_at, state.last_status) == (None, None, "finalized")
    with utc(duckdb.connect(wh.database)) as conn:
        assert conn.execute("SELECT count(*) FROM kalshi_settlement_reads WHERE flag IS NOT NULL").fetchone()[0] == 0


def test_normal_ticker_settles_as_before(manual_sim: SimHandle, tmp_path: Path) -> None:
    wh, api, ticker = _setup(manual_sim, tmp_path)
    market = manual_sim.exchange.market(ticker)
    manual_sim.advance(market.close_ts - manual_sim.clock.now() + 61)  # determined, not yet final
    assert ticker in _read(wh, api, _sim_now(manual_sim))[0]
    assert _state(wh, ticker).next_read_at == _sim_now(manual_sim)  # news: read again on the next run
    manual_sim.advance(300)  # finalized
    assert ticker in _read(wh, api, _sim_now(manual_sim))[0]
    state = _state(wh, ticker)
    assert (state.reads, state.stale_reads, state.flag, state.last_status) == (2, 0, None, "finalized")
    with utc(duckdb.connect(wh.database)) as conn:
        outcome, status = conn.execute("SELECT outcome, settlement_status FROM kalshi_contracts WHERE ticker = ?", [ticker]).fetchone()
        history = conn.execute("SELECT status FROM kalshi_settlement_observations WHERE ticker = ? ORDER BY observed_at", [ticker]).fetchall()
    assert (outcome, status) == (manual_sim.exchange.natural_result(market), "finalized")
    assert history == [("determined",), ("finalized",)]
    assert ticker not in _read(wh, api, _sim_now(manual_sim) + timedelta(hours=1))[0]


@pytest.mark.parametrize("stale, gap", [(0, timedelta(0)), (1, MINUTE), (3, 4 * MINUTE), (7, timedelta(hours=1)), (500, timedelta(hours=1))])
def test_retry_gap_doubles_and_is_capped(stale: int, gap: timedelta) -> None:
    assert retry_gap(stale) == gap
