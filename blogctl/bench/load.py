"""The one load generator: threads, each with a keep-alive client of its own, calling one function.

The bench runs it for a time (`seconds`) and reads the rate and latencies, or in the background
until it calls `stop()`; the fault tests run it for a number of calls (`each`) in the background,
watch its progress and join it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.shared.config import Config
from services.shared.http import HttpClient

from ..client import BlogClient
from ..errors import BlogctlError

# call(client, worker, i): the i-th call of worker number `worker`; returns the units of work done.
Call = Callable[[BlogClient, int, int], int]


def worker_client(config: Config, timeout: float = 60) -> BlogClient:
    """A load worker's client: blogctl's, on one keep-alive connection of its own."""
    return BlogClient(config, http=HttpClient(timeout=timeout, connections=1), timeout=timeout)


class LoadFailed(BlogctlError):
    pass


@dataclass(frozen=True)
class Load:
    count: int
    seconds: float
    latencies: list[float]  # seconds

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class LoadGenerator:
    """`threads` workers calling `call` until `seconds` pass, or each has made `each` calls, or
    (given neither) until `stop()`."""

    def __init__(self, call: Call, *, threads: int, client: Callable[[], BlogClient],
                 seconds: float | None = None, each: int | None = None) -> None:
        if seconds is not None and each is not None:
            raise ValueError("give seconds or each, not both")
        self.call = call
        self.client = client
        self.seconds = seconds
        self.each = each
        self.errors: list[str] = []
        self._done = [0] * threads  # each worker writes only its own: no lock on the hot path
        self._latencies: list[float] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(k,), name=f"load-{k}", daemon=True)
                         for k in range(threads)]
        self._started = self._deadline = 0.0
        self._elapsed: float | None = None
        self._stopped = threading.Event()

    def _more(self, i: int) -> bool:
        """Whether a worker makes its call number `i`."""
        if self._stopped.is_set():
            return False
        if self.each is not None:
            return i < self.each
        return self.seconds is None or time.perf_counter() < self._deadline

    def _work(self, worker: int) -> None:
        latencies = []
        try:
            with self.client() as client:
                i = 0
                while self._more(i):
                    started = time.perf_counter()
                    done = self.call(client, worker, i)
                    latencies.append(time.perf_counter() - started)
                    self._done[worker] += done
                    i += 1
        except Exception as exc:  # noqa: BLE001 - reported by join(): a worker's failure fails the load
            with self._lock:
                self.errors.append(f"worker {worker}: {exc}")
        finally:
            with self._lock:
                self._latencies += latencies

    @property
    def done(self) -> int:
        return sum(self._done)

    def start(self) -> LoadGenerator:
        self._started = time.perf_counter()
        self._deadline = self._started + (self.seconds or 0.0)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Every worker ends after the call it is making."""
        self._stopped.set()

    def finished(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> Load:
        """Wait for every worker (at most `timeout` seconds); LoadFailed if one failed or is still running."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not self.finished():
            raise LoadFailed(f"load generator still running after {timeout:g}s")
        if self.errors:
            raise LoadFailed(f"{len(self.errors)} of {len(self._threads)} load workers failed: {self.errors[0]}")
        if self._elapsed is None:
            self._elapsed = time.perf_counter() - self._started
        with self._lock:
            return Load(sum(self._done), self._elapsed, list(self._latencies))


def run_load(call: Call, *, threads: int, seconds: float, client: Callable[[], BlogClient]) -> Load:
    """Run `call` from `threads` workers for `seconds`; its rate and latencies."""
    return LoadGenerator(call, threads=threads, seconds=seconds, client=client).start().join(seconds + 30)
