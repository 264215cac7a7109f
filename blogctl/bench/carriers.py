"""What carries the bench's events: whichever transport the formation runs on, through the seam.

The carrier publishes batches straight to the transport (around Posts and Comments, as their
relays do), and asks the seam's inspection how long the log is and what still waits for
whom: it never needs to know which transport it is.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from services.shared import transport as transport_module
from services.shared.events import CommentCreated, Event, PostCreated
from services.shared.transport import TransportError

from ..runtime import Runtime

SOURCE = "bench"  # the publisher, as the log names it


def post_event() -> Event:
    return Event.of(PostCreated(id=uuid.uuid4().hex[:16], title="a benchmark post"), source=SOURCE)


def comment_event(post_id: str) -> Event:
    return Event.of(CommentCreated(id=uuid.uuid4().hex[:16], content="a benchmark comment", postId=post_id),
                    source=SOURCE)


PAGE = 5000


class Carrier:
    def __init__(self, rt: Runtime) -> None:
        self.config = rt.config
        self.inspection = rt.inspection
        self.description = self.inspection.describe()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._publishers: list = []

    @property
    def name(self) -> str:
        return self.description.name

    def _publisher(self):
        publisher = getattr(self._local, "publisher", None)
        if publisher is None:  # one publishing connection per thread
            publisher = self._local.publisher = transport_module.from_config(self.config, SOURCE)
            with self._lock:
                self._publishers.append(publisher)
        return publisher

    def publish(self, events: Sequence[Event]) -> bool:
        """True once the transport has durably accepted `events`; False if it refused or is unreachable."""
        try:
            self._publisher().publish(events)
        except TransportError:
            return False
        return True

    def logged(self, event_type: str) -> int:
        """Events of `event_type` in the log, read through (a broker's own count of a stream is not reliable)."""
        return sum(event.type == event_type for page in self.inspection.iter_log(page=PAGE) for event in page)

    def consumers(self) -> list[dict]:
        """What the transport holds for each consumer (the log itself, `waiting` None, left out)."""
        return [entry for entry in self.inspection.backlog() if entry["waiting"] is not None]

    def delivered(self) -> bool:
        return all(entry["waiting"] == 0 for entry in self.consumers())

    def close(self) -> None:
        for publisher in self._publishers:
            publisher.close()


@contextmanager
def carrier_for(rt: Runtime) -> Iterator[Carrier]:
    carrier = Carrier(rt)
    try:
        yield carrier
    finally:
        carrier.close()
