"""The HTTP transport against buses that are not quite ours: a body limit, the course's bus.

`FakeBus` answers what a bus would, from memory, through the transport's HTTP client seam.
"""
from __future__ import annotations

import orjson
import pytest

from services.shared.events import Event
from services.shared.http import Answer
from services.shared.transport import TransportError
from services.shared.transport.bus import UNREADABLE, HttpTransport


class FakeBus:
    """Ours (batches, `/health` says `bus`) or the course's (one event per POST, no `/health`), with a body limit."""

    def __init__(self, *, ours: bool, limit: int = 100 * 1024, fail_after: int | None = None) -> None:
        self.ours = ours
        self.limit = limit
        self.fail_after = fail_after  # refuse every POST after this many were taken
        self.bodies: list[object] = []
        self.log: list[object] = []

    def request(self, method, url, *, body=None, headers=None, params=None) -> Answer:
        path = url.split("127.0.0.1:1", 1)[1]
        if (method, path) == ("GET", "/health"):
            return self._json({"service": "bus", "status": "ok"}) if self.ours else Answer(404, b"Cannot GET", {})
        if (method, path) == ("GET", "/events"):
            return self._json(self.log)
        assert (method, path) == ("POST", "/events")
        if len(body) > self.limit:
            return Answer(413, b"request entity too large", {})
        if self.fail_after is not None and len(self.bodies) >= self.fail_after:
            return Answer(500, b"down for a moment", {})
        payload = orjson.loads(body)
        self.bodies.append(payload)
        self.log.extend(payload if self.ours and isinstance(payload, list) else [payload])
        return self._json({"status": "OK"})

    def close(self) -> None:
        pass

    @staticmethod
    def _json(value) -> Answer:
        return Answer(200, orjson.dumps(value), {"Content-Type": "application/json"})


def long_comments(n: int) -> list[Event]:
    return [Event("CommentCreated", {"id": f"c{i}", "content": "x" * 2000, "postId": "p1"}) for i in range(n)]


def transport(bus: FakeBus) -> HttpTransport:
    return HttpTransport("http://127.0.0.1:1", source="comments", http=bus)


def test_a_batch_too_large_for_the_bus_is_split_until_each_part_passes():
    bus = FakeBus(ours=True, limit=20 * 1024)
    events = long_comments(60)
    transport(bus).publish(events)
    assert [e["id"] for e in bus.log] == [e.id for e in events]  # every one, once, in order
    assert len(bus.bodies) > 1 and all(len(orjson.dumps(b)) <= 20 * 1024 for b in bus.bodies)


def test_one_event_too_large_for_the_bus_is_an_error_to_retry_not_a_loop():
    bus = FakeBus(ours=True, limit=1024)
    with pytest.raises(TransportError, match="413"):
        transport(bus).publish(long_comments(3))
    assert bus.log == []


def test_a_bus_that_is_not_ours_gets_the_course_shape_one_event_per_request():
    bus = FakeBus(ours=False)
    events = long_comments(60)
    transport(bus).publish(events)
    assert bus.bodies == [{"type": "CommentCreated", "data": e.data} for e in events]


def test_a_retried_batch_sends_the_course_bus_only_what_it_had_not_taken():
    bus = FakeBus(ours=False, fail_after=2)
    events = long_comments(5)
    publisher = transport(bus)
    with pytest.raises(TransportError):
        publisher.publish(events)
    bus.fail_after = None
    publisher.publish(events)
    assert [b["data"]["id"] for b in bus.bodies] == [e.data["id"] for e in events]


def test_a_log_in_the_course_shape_is_read_by_position():
    bus = FakeBus(ours=False)
    bus.log = [
        {"type": "PostCreated", "data": {"id": "p1", "title": "one"}},
        [{"type": "PostCreated", "data": {"id": "p2", "title": "a batch logged as one entry"}}],
        {"type": "CommentCreated", "data": {"id": "c1", "content": "hi", "postId": "p1"}},
    ]
    reader = transport(bus)
    whole = reader.read_log(after=0, limit=100)
    assert [(e.seq, e.type) for e in whole] == [(1, "PostCreated"), (2, UNREADABLE), (3, "CommentCreated")]
    assert [(e.seq, e.data) for e in reader.read_log(after=2, limit=100)] == [(3, bus.log[2]["data"])]
    assert [e.seq for e in reader.read_log(after=0, limit=2)] == [1, 2]
    assert reader.read_log(after=3, limit=100) == []
