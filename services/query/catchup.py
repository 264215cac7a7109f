"""Query's catch-up: on start, and whenever a delivery shows a gap, read what it missed from the log."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
import time

from services.shared.retry import Stopped, retry_until_stopped
from services.shared.transport import Transport, TransportError

from .view import QueryView


class CatchUp:
    def __init__(self, view: QueryView, transport: Transport, *, page: int = 5000) -> None:
        self.view = view
        self.transport = transport
        self.page = page
        self.last_error: str | None = None
        self.running = False
        self.last_run: dict | None = None  # events read and seconds taken by the last catch-up
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up_once(self) -> int:
        """Apply the log after `applied_seq` until its end; return how many events were read.

        The next page is fetched while this one is applied: reading (bus, network, parsing)
        and applying (SQLite) then overlap instead of taking turns.
        """
        read = 0
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catch-up-read") as reader:
            pending = reader.submit(self.transport.read_log, after=self.view.applied_seq, limit=self.page)
            while True:
                events = pending.result()
                full = len(events) == self.page
                if full:
                    pending = reader.submit(self.transport.read_log, after=events[-1].seq, limit=self.page)
                if events:
                    self.view.apply(events, from_log=True)
                    read += len(events)
                if not full:
                    self.last_error = None
                    if read:
                        self.last_run = {"events": read, "seconds": round(time.perf_counter() - started, 3)}
                    return read

    def request(self) -> None:
        """A gap was seen: catch up soon, in the background."""
        self._wake.set()

    def start(self) -> None:
        self._wake.set()  # catch up once at start
        self._thread = threading.Thread(target=self._run, name="query-catch-up", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _record(self, exc: BaseException, attempt: int) -> None:
        self.last_error = str(exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            self.running = True
            try:
                retry_until_stopped(
                    self.catch_up_once, self._stop, what="catching up from the event log",
                    retry_on=TransportError, on_error=self._record,
                )
            except Stopped:
                return
            finally:
                self.running = False
