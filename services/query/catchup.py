"""Query's catch-up: on start, and whenever a delivery shows a gap, read what it missed from the log."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from services.shared.transport import Transport, TransportError
from services.shared.worker import Worker

from .view import QueryView


class CatchUp(Worker):
    """Reads the log after Query's position: once at start, then whenever `request()` is called."""

    thread_name = "query-catch-up"
    what = "catching up from the event log"
    retry_on = TransportError
    idle_wait = None  # caught up: sleep until a gap is seen

    def __init__(self, view: QueryView, transport: Transport, *, page: int = 5000) -> None:
        super().__init__()
        self.view = view
        self.transport = transport
        self.page = page
        self.running = False
        self.last_run: dict | None = None  # events read and seconds taken by the last catch-up

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

    def step(self) -> int:
        self.running = True
        try:
            return self.catch_up_once()
        finally:
            self.running = False

    request = Worker.notify  # a gap was seen: catch up soon, in the background
