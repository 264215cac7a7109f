"""Delivery from the log to each subscriber: its own thread, its own persisted cursor.

At-least-once and in log order: the cursor moves only after the subscriber answered 2xx.
A subscriber that is down, slow or failing is retried with capped backoff in its own
thread, so it never holds up the others.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import requests

from services.shared.config import Subscriber
from services.shared.retry import Stopped, retry_until_stopped

from .log import EventLog, row_to_json

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The subscriber did not take the batch; it will be sent again."""


@dataclass
class DeliveryStatus:
    name: str
    url: str
    cursor: int
    failures: int = 0  # consecutive failed attempts of the current batch
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivered_at: float | None = None


class Deliverer:
    def __init__(
        self,
        event_log: EventLog,
        subscriber: Subscriber,
        *,
        batch_size: int = 100,
        timeout: tuple[float, float] = (1.0, 5.0),
        max_backoff: float = 5.0,
        session: requests.Session | None = None,
    ) -> None:
        self.log = event_log
        self.subscriber = subscriber
        self.batch_size = batch_size if subscriber.batch else 1
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.status = DeliveryStatus(subscriber.name, subscriber.url, event_log.cursor(subscriber.name))
        self._session = session or requests.Session()
        self._wake = event_log.wakeup()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_once(self) -> int:
        """Send the next batch after the cursor; return its size (0: nothing to send)."""
        rows = list(self.log.read_after(self.status.cursor, limit=self.batch_size))
        if not rows:
            return 0
        items = [row_to_json(row) for row in rows]
        body = f"[{','.join(items)}]" if self.subscriber.batch else items[0]
        try:
            response = self._session.post(
                self.subscriber.url, data=body.encode(), timeout=self.timeout,
                headers={"Content-Type": "application/json"},
            )
        except requests.RequestException as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}")
        self.log.advance(self.subscriber.name, rows[-1]["seq"])
        self.status.cursor = rows[-1]["seq"]
        self.status.failures = 0
        self.status.last_delivered_at = time.time()
        return len(rows)

    def _record(self, exc: BaseException, attempt: int) -> None:
        self.status.failures = attempt
        self.status.last_error = str(exc)
        self.status.last_error_at = time.time()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"deliver-{self.subscriber.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._session.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before reading, so an append during the read is not missed
            try:
                sent = retry_until_stopped(
                    self.deliver_once, self._stop, what=f"delivering to {self.subscriber.name}",
                    retry_on=DeliveryFailed, maximum=self.max_backoff, on_error=self._record,
                )
            except Stopped:
                return
            if sent < self.batch_size:
                self._wake.wait(1.0)


class Delivery:
    """All subscribers' deliverers, started and stopped together."""

    def __init__(self, event_log: EventLog, subscribers: tuple[Subscriber, ...], **options) -> None:
        self.deliverers = [Deliverer(event_log, s, **options) for s in subscribers]

    def start(self) -> None:
        for deliverer in self.deliverers:
            deliverer.start()

    def stop(self) -> None:
        for deliverer in self.deliverers:
            deliverer.stop()

    def statuses(self) -> list[DeliveryStatus]:
        return [d.status for d in self.deliverers]
