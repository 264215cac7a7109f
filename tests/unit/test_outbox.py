import json
import threading
from collections import Counter, defaultdict

import pytest

from services.posts.store import SCHEMA, PostStore
from services.shared import outbox
from services.shared.db import Database
from services.shared.events import CommentCreated, Event
from services.shared.transport import InMemoryBus, TransportError
from tests.helpers import wait_until


def test_a_post_and_its_event_wait_in_the_outbox_while_the_bus_is_down(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    bus = InMemoryBus()
    relay = outbox.Relay(db, bus.transport("posts"))
    bus.down = True
    post = PostStore(db).create("kept")
    assert outbox.pending(db) == 1
    with pytest.raises(TransportError):
        relay.relay_once()
    assert outbox.pending(db) == 1 and bus.log == []
    bus.down = False
    assert relay.relay_once() == 1
    assert outbox.pending(db) == 0
    assert [(e.type, e.data) for e in bus.log] == [("PostCreated", post)]


def test_a_relay_retry_after_a_lost_acknowledgement_logs_the_event_once(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    bus = InMemoryBus()
    PostStore(db).create("once")
    relay = outbox.Relay(db, bus.transport("posts"))
    # The bus logged the batch but the relay never heard back: it publishes the same rows again.
    rows = db.connection().execute("SELECT event FROM outbox").fetchall()
    bus.publish([Event.from_dict(json.loads(r["event"])) for r in rows])
    relay.relay_once()
    assert len(bus.log) == 1


class Recording:
    """A transport that records every publish (no deduplication, so a double publish shows) or fails while `down`."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.down = False
        self.callers: list[str] = []  # the thread of each publish

    def publish(self, events, *, timeout=None) -> None:
        self.callers.append(threading.current_thread().name)
        if self.down:
            raise TransportError("bus is down")
        self.published.extend(events)


def started_relay(db: Database, transport: Recording) -> outbox.Relay:
    """A running relay whose thread has taken its first look (it publishes an event written before)
    and now sleeps until woken."""
    with db.transaction() as conn:
        outbox.add(conn, Event.of(CommentCreated(id="first", content="0", postId="first")))
    relay = outbox.Relay(db, transport, idle_wait=60)
    relay.start()
    wait_until(lambda: transport.published, timeout=5, message="the relay thread's first look")
    transport.published.clear()
    return relay


def test_a_request_publishes_its_event_itself_once(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    transport = Recording()
    relay = started_relay(db, transport)
    try:
        post = PostStore(db).create("now")
        assert relay.publish_now() is True
        assert [e.data for e in transport.published] == [post] and outbox.pending(db) == 0
        assert relay.relay_once() == 0 and relay.publish_now() is True  # nothing left for anyone
    finally:
        relay.stop()
    assert len(transport.published) == 1


def test_requests_and_the_relay_thread_publish_each_event_once_and_in_order(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    transport = Recording()
    relay = outbox.Relay(db, transport, idle_wait=0.001, batch=3)  # the thread looks all the time, in small batches
    relay.start()
    committed: list[str] = []  # ids in commit order (appended while the writer lock is held)

    def write(worker: int) -> None:
        for n in range(30):
            with db.transaction() as conn:
                event_id = f"{worker}-{n}"
                outbox.add(conn, Event.of(CommentCreated(id=event_id, content=str(n), postId=f"p{worker % 3}")))
                committed.append(event_id)
            relay.publish_now()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        wait_until(lambda: outbox.pending(db) == 0, timeout=10, message="the outbox to empty")
    finally:
        relay.stop()
    ids = Counter(event.id for event in transport.published)
    assert len(ids) == 6 * 30 and set(ids.values()) == {1}  # exactly once each
    post_of = {event.data["id"]: event.data["postId"] for event in transport.published}
    for post in ("p0", "p1", "p2"):
        published = [event.data["id"] for event in transport.published if event.data["postId"] == post]
        assert published == [i for i in committed if post_of[i] == post], "a post's events out of order"


def test_a_request_publishes_an_older_pending_event_of_its_post_first(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    transport = Recording()
    relay = started_relay(db, transport)
    try:
        with db.transaction() as conn:  # written before, not yet relayed
            outbox.add(conn, Event.of(CommentCreated(id="older", content="1", postId="p")))
        with db.transaction() as conn:
            outbox.add(conn, Event.of(CommentCreated(id="newer", content="2", postId="p")))
        assert relay.publish_now() is True
    finally:
        relay.stop()
    assert [e.data["id"] for e in transport.published] == ["older", "newer"]


def test_a_failed_publish_from_a_request_leaves_the_event_to_the_relay(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    transport = Recording()
    relay = started_relay(db, transport)
    try:
        transport.down = True
        post = PostStore(db).create("later")
        assert relay.publish_now() is False
        assert outbox.pending(db) == 1  # kept for the relay thread
        tried = transport.callers.count(threading.current_thread().name)
        PostStore(db).create("later too")
        assert relay.publish_now() is False  # requests no longer try: the relay thread retries
        assert transport.callers.count(threading.current_thread().name) == tried
        transport.down = False
        wait_until(lambda: outbox.pending(db) == 0, timeout=10, message="the relay thread to publish them")
        assert [e.data["title"] for e in transport.published] == [post["title"], "later too"]
        PostStore(db).create("now again")
        wait_until(lambda: relay.last_error is None, timeout=5, message="the relay to clear its error")
        assert relay.publish_now() is True and transport.published[-1].data["title"] == "now again"
    finally:
        relay.stop()


def test_a_relay_that_is_not_running_leaves_publishing_to_whoever_drives_it(tmp_path):
    db = Database(tmp_path / "posts.db", SCHEMA)
    transport = Recording()
    relay = outbox.Relay(db, transport)
    PostStore(db).create("by hand")
    assert relay.publish_now() is False and transport.published == [] and outbox.pending(db) == 1
    assert relay.relay_once() == 1
