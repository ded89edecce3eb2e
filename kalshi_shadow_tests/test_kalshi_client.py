"""The Kalshi client against fixtures and against the simulator over loopback."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kalshi_shadow.kalshi.auth import KalshiSigner
from kalshi_shadow.kalshi.client import KalshiAPIError, KalshiClient
from kalshi_shadow.kalshi.models import KalshiParseError, parse_market
from kalshi_shadow.sim.server import SimHandle

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())["market"]


def test_fixed_point_market_parses_exactly() -> None:
    m = parse_market(_fixture("kalshi_market_fp.json"))
    assert m.yes_bid == Decimal("0.360") and m.yes_ask == Decimal("0.3800")
    assert m.yes_ask_size == Decimal("150.50") and m.volume == Decimal("12034.00")
    assert m.floor_strike == 114999.99 and m.cap_strike is None and m.result is None
    assert m.close_time.isoformat() == "2025-08-05T21:00:00+00:00"
    tob = m.top_of_book()
    assert (tob.yes_bid, tob.yes_ask, tob.no_bid, tob.no_ask) == (Decimal("0.360"), Decimal("0.38"), Decimal("0.62"), Decimal("0.64"))


def test_missing_required_price_is_a_clear_error() -> None:
    with pytest.raises(KalshiParseError, match=r"KXBTCD-25AUG0517-T114999\.99: required field 'yes_ask_dollars' is missing"):
        parse_market(_fixture("kalshi_market_missing_price.json"))


def test_garbage_price_is_rejected_not_defaulted() -> None:
    obj = {**_fixture("kalshi_market_fp.json"), "no_bid_dollars": "n/a"}
    with pytest.raises(KalshiParseError, match="no_bid_dollars"):
        parse_market(obj)


def test_empty_book_side_is_missing_not_a_price() -> None:
    obj = {**_fixture("kalshi_market_fp.json"), "yes_bid_dollars": "0.0000", "no_ask_dollars": "1.0000", "yes_bid_size_fp": "0.00"}
    tob = parse_market(obj).top_of_book()
    assert tob.yes_bid is None and tob.no_ask is None and tob.yes_bid_size is None
    assert tob.yes_ask == Decimal("0.38")


def test_signed_requests_are_verified_by_the_simulator(sim: SimHandle, rsa_key: rsa.RSAPrivateKey) -> None:
    good = KalshiClient(sim.kalshi_base_url, signer=KalshiSigner("test-key", rsa_key), max_retries=0)
    assert good.get_exchange_status().exchange_active
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for signer in (KalshiSigner("test-key", other), KalshiSigner("someone-else", rsa_key)):
        with pytest.raises(KalshiAPIError) as err:
            KalshiClient(sim.kalshi_base_url, signer=signer, max_retries=0).get_exchange_status()
        assert err.value.status == 401
    assert "test-key" not in repr(KalshiSigner("test-key", rsa_key))


def test_pagination_reads_every_market_once(manual_sim: SimHandle) -> None:
    client = KalshiClient(manual_sim.kalshi_base_url, reads_per_second=500)
    tickers = [m.ticker for m in client.iter_markets(series_ticker="KXBTCD", limit=30)]
    expected = {m.ticker for m in manual_sim.exchange.markets() if m.series == "KXBTCD"}
    assert len(tickers) == len(set(tickers)) == len(expected) > 60
    assert set(tickers) == expected


def test_429_and_5xx_are_retried_and_reported(sim: SimHandle) -> None:
    events: list[tuple[str, str]] = []
    client = KalshiClient(sim.kalshi_base_url, backoff_base=0.01, on_event=lambda k, d: events.append((k, d)))
    sim.faults(http_429=2, http_5xx=2)
    assert client.get_series("KXBTC15M").fee_type == "quadratic"
    assert [k for k, _ in events] == ["rate_limited", "rate_limited", "http_error", "http_error"]


def test_persistent_failure_raises_after_max_retries(sim: SimHandle) -> None:
    events: list[str] = []
    client = KalshiClient(sim.kalshi_base_url, backoff_base=0.01, max_retries=3, on_event=lambda k, d: events.append(k))
    sim.faults(http_5xx=10)
    with pytest.raises(KalshiAPIError, match="giving up after 4 attempts"):
        client.get_series("KXBTC")
    assert events == ["http_error"] * 4


def test_unreachable_exchange_is_a_connect_error() -> None:
    events: list[str] = []
    client = KalshiClient("http://127.0.0.1:9/trade-api/v2", backoff_base=0.01, max_retries=1, on_event=lambda k, d: events.append(k))
    with pytest.raises(KalshiAPIError):
        client.get_exchange_status()
    assert events == ["connect_error", "connect_error"]


def test_shadow_code_has_no_path_that_sends_an_order() -> None:
    """No method names an order action, and no production module issues a write verb or touches /portfolio."""
    names = {n.lower() for n in dir(KalshiClient)} - {"get_orderbook"}
    assert not {n for n in names if any(w in n for w in ("order", "amend", "cancel", "portfolio"))}
    root = Path(__file__).parents[1]
    offenders = []
    for path in [*(root / "kalshi_shadow").rglob("*.py"), *(root / "collectors").rglob("*.py")]:
        if "sim" in path.relative_to(root).parts:
            continue  # the simulator is the exchange's side
        text = path.read_text()
        offenders += [f"{path.name}: {w}" for w in ("/portfolio", ".post(", ".put(", ".delete(", ".patch(", '"POST"', '"DELETE"') if w in text]
    assert offenders == []
