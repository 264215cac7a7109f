import json

import pytest

from services.posts.store import SCHEMA, PostStore
from services.shared import outbox
from services.shared.db import Database
from services.shared.events import Event
from services.shared.transport import InMemoryBus, TransportError


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
