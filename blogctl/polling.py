"""The one way to wait: poll a condition against a deadline, never a fixed sleep.

blogctl's commands, the bench and the tests all wait through `wait_for` (the last value,
truthy or not) or `wait_until` (the value, or an error naming what did not happen).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import BlogctlError

T = TypeVar("T")


class WaitTimedOut(BlogctlError):
    """A condition did not hold before its deadline."""


def wait_for(condition: Callable[[], T], *, timeout: float, interval: float = 0.05) -> T:
    """Call `condition` until it returns something truthy or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        remaining = deadline - time.monotonic()
        if value or remaining <= 0:
            return value
        time.sleep(min(interval, remaining))


def wait_until(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, message: str = "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """`condition`'s first truthy value; WaitTimedOut after `timeout` seconds.

    An exception of a type in `ignoring` counts as "not yet" (a service still starting, an
    assertion not yet true); the last one is named in the error.
    """
    last: list[BaseException] = []

    def attempt() -> T | None:
        try:
            return condition()
        except ignoring as exc:
            last[:] = [exc]
            return None

    value = wait_for(attempt, timeout=timeout, interval=interval)
    if value:
        return value
    cause = f" (last error: {last[0]})" if last else ""
    raise WaitTimedOut(f"gave up after {timeout:g}s waiting for {message or 'a condition'}{cause}")
