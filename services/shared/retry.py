"""The one retry policy: exponential backoff with jitter, capped, interrupted by a stop event."""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """Exponential backoff from `initial` seconds, doubling, capped at `maximum`, plus jitter up to `initial`."""

    initial: float = 0.05
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 for the first failure)."""
        return min(self.maximum, self.initial * 2 ** min(max(attempt - 1, 0), 32)) + random.uniform(0, self.initial)


POLICY = Policy()  # the one policy; a loop that cannot hand its call to `retry_until_stopped` asks it for delays


class Stopped(Exception):
    """The worker was asked to stop while it was retrying."""


def retry_until_stopped(
    call: Callable[[], T],
    stop: threading.Event,
    *,
    what: str,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    initial: float = POLICY.initial,
    maximum: float = POLICY.maximum,
    on_error: Callable[[BaseException, int], None] | None = None,
) -> T:
    """Call `call` until it succeeds or `stop` is set (then raise Stopped)."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            if state.attempt_number in (1, 10) or state.attempt_number % 100 == 0:
                log.warning("%s failed (attempt %d), retrying: %s", what, state.attempt_number, exc)
            if on_error is not None:
                on_error(exc, state.attempt_number)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        wait=lambda state: Policy(initial, maximum).delay(state.attempt_number),
        stop=lambda state: stop.is_set(),
        sleep=stop.wait,
        before_sleep=before_sleep,
        reraise=False,
    )
    try:
        return retrying(call)
    except tenacity.RetryError:
        raise Stopped(what) from None
