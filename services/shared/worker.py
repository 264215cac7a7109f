"""The one shape of a background worker: a thread that repeats a step, retried with the one
backoff policy, sleeping while there is nothing to do until something wakes it."""
from __future__ import annotations

import threading

from .retry import Stopped, retry_until_stopped


class Worker:
    """Subclasses give `step()` (returns how much it did; 0 means idle) and what to retry on."""

    thread_name = "worker"
    what = "background work"  # for the retry log: "<what> failed (attempt n), retrying"
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    max_backoff = 5.0
    idle_wait: float | None = 1.0  # seconds to sleep when idle before looking again; None: until woken

    def __init__(self, wake: threading.Event | None = None) -> None:
        self.last_error: str | None = None
        self._wake = wake or threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        raise NotImplementedError

    def notify(self) -> None:
        """There is new work: do it now rather than at the next idle check."""
        self._wake.set()

    def on_error(self, exc: BaseException, attempt: int) -> None:
        self.last_error = str(exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking, so a notify while the step runs is not lost
            try:
                done = retry_until_stopped(
                    self.step, self._stop, what=self.what, retry_on=self.retry_on,
                    maximum=self.max_backoff, on_error=self.on_error,
                )
            except Stopped:
                return
            if not done:
                self._wake.wait(self.idle_wait)
