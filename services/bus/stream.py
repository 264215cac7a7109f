"""The log streamed to a subscriber over one long-lived response: `GET /events/stream?after=N`.

A pushed delivery is one HTTP exchange per batch: the bus's POST, and on the subscriber the
server parsing it and handing it to a request thread. A subscriber that asks for the stream
(Query: its view is what a reader waits for) gets instead one chunked response of the log
after its own position, one JSON event per line: what is already there (catching up), then each
event as it is appended. It applies them in order and keeps its own position, as it does for
pushed events, so when the stream drops it asks again from that position and misses nothing.

While a subscriber has a stream open, its deliverer pushes nothing (delivery.py). What was
sent is not yet taken (a subscriber killed still had bytes accepted by its socket): its cursor
moves when it says what it has applied (`PUT /events/cursors/NAME`, sent off the stream's
path, after each batch it applied), so its backlog is what it lacks, and when the stream ends
pushes resume from there. A line
holding only a newline is sent after `HEARTBEAT` seconds without events: a reader that hears
nothing for several of them knows the stream is dead, and the bus, failing to write to a
subscriber gone, ends the stream. Each open stream holds one of the bus's request threads, so
at most `STREAMS_MAX` are open at once; beyond that the bus answers 503 and pushes as before.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from services.shared.transport.bus import HEARTBEAT

from .delivery import Delivery, delivered_items
from .log import EventLog

log = logging.getLogger(__name__)

STREAMS_MAX = 3  # of the bus's 8 request threads: the rest always answer publishes and reads


class TooManyStreams(Exception):
    """Every stream the bus allows is open: the subscriber is pushed to meanwhile."""


class PastTheEnd(Exception):
    """The position asked for is past the log's end (the log was emptied since)."""


class Streams:
    """The open streams: opened by the route, ended by `reset` (the log was emptied) and `stop`."""

    def __init__(self, event_log: EventLog, delivery: Delivery, *, limit: int = STREAMS_MAX,
                 heartbeat: float = HEARTBEAT) -> None:
        self.log = event_log
        self.delivery = delivery
        self.limit = limit
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._open: list[threading.Event] = []  # each stream's wake-up flag, set by every append
        self._generation = 0  # moved by `reset`: a stream of an older generation ends
        self._stopping = threading.Event()
        self._stopping.set()  # until started: a bus not running its components sends what it has, then ends

    def follow(self, subscriber: str, after: int) -> Iterator[bytes]:
        """The stream of the log after `after` for `subscriber`, lines of JSON events; ends when the
        reader goes, the log is emptied or the bus stops. Raises TooManyStreams, PastTheEnd."""
        if after > self.log.last_seq():
            raise PastTheEnd(f"position {after} is past the log's end ({self.log.last_seq()})")
        if len(self._open) >= self.limit:
            raise TooManyStreams(f"{len(self._open)} streams are open, the most the bus serves")
        return self._lines(subscriber, after)

    def _lines(self, subscriber: str, sent: int) -> Iterator[bytes]:
        # Opened on the first read, not in `follow`: a response never iterated is never closed either.
        wake = threading.Event()
        deliverer = self.delivery.deliverers.get(subscriber)
        with self._lock:
            self._open.append(wake)
            generation = self._generation
            if deliverer is not None:
                deliverer.status.streaming += 1
        self.log.add_wakeup(wake)
        try:
            yield b"\n"  # the response's head goes out now: the reader knows it is streaming
            while generation == self._generation:
                wake.clear()  # before reading: an append while this reads sets it again
                moved = sent
                for page in self.log.pages(sent):
                    with delivered_items(page, subscriber) as items:
                        yield ("\n".join(items) + "\n").encode()
                    sent = page[-1]["seq"]
                    if deliverer is not None:
                        deliverer.streamed(len(page))
                if self._stopping.is_set():
                    return
                if sent == moved and not wake.wait(self.heartbeat):
                    yield b"\n"
        finally:
            self.log.remove_wakeup(wake)
            with self._lock:
                self._open.remove(wake)
                if deliverer is not None:
                    deliverer.status.streaming -= 1
            if deliverer is not None:
                deliverer.notify()  # pushes resume from what the stream sent, if no other stream is open

    def open(self) -> int:
        return len(self._open)

    def reset(self) -> None:
        """The log was emptied: every open stream ends (its reader asks again from its position)."""
        with self._lock:
            self._generation += 1
            for wake in self._open:
                wake.set()

    def start(self) -> None:
        self._stopping.clear()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for wake in self._open:
                wake.set()

    release_requests = stop  # at SIGTERM, before waitress waits for its request threads: each stream ends


__all__ = ["HEARTBEAT", "STREAMS_MAX", "PastTheEnd", "Streams", "TooManyStreams"]
