"""Shared fixtures: the exchange simulator on loopback (wall clock or a manual clock), and RSA keys."""

from __future__ import annotations

from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kalshi_shadow.sim.server import SimConfig, SimHandle, manual_clock_at, start_in_thread


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test first (scripts/test hands out whole files, in this order): a long file started
    last would stretch the pass, which must stay under six minutes on two cores."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: collection order otherwise


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def public_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def sim(public_pem: bytes) -> Iterator[SimHandle]:
    """A wall-clock simulator in fast mode, accepting signatures of key id 'test-key'."""
    handle = start_in_thread(SimConfig(fast=True, api_key_id="test-key", public_key_pem=public_pem, ticks_per_second=20.0))
    yield handle
    handle.stop()


@pytest.fixture
def manual_sim() -> Iterator[SimHandle]:
    """A simulator whose time only moves with `handle.advance(seconds)` (starts 2026-07-29 04:00Z)."""
    handle = start_in_thread(SimConfig(clock=manual_clock_at(), rate_limit_per_second=1000.0))
    yield handle
    handle.stop()


@pytest.fixture
def ups(tmp_path):
    """Real `kalshi-shadow up` processes on a temporary data dir (see test_supervisor.Ups); all killed afterwards."""
    from kalshi_shadow_tests.test_supervisor import Ups

    u = Ups(tmp_path.resolve())
    try:
        yield u
    finally:
        u.kill_all()
