"""Polling for a condition that real processes and servers reach in their own time (no sleeps of a fixed length)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 20.0, *, what: str = "a condition", every: float = 0.1) -> T:
    """The first truthy value of `check()`, polled every `every` s; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
