"""Waiting in blogctl is always polling a condition against a deadline, never a fixed sleep."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float, interval: float = 0.05) -> T:
    """Call `condition` until it returns something truthy or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        remaining = deadline - time.monotonic()
        if value or remaining <= 0:
            return value
        time.sleep(min(interval, remaining))
