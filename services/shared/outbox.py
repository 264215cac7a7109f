"""The transactional outbox: a write and its event commit together; a relay hands events to the bus.

A post created while the bus is down is kept with its event in the outbox. The relay
publishes it when the bus is back; the bus ignores an event id it already holds, so a
retry after a lost acknowledgement does not log the same event twice.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

import orjson

from . import tracing
from .db import Database
from .events import Event
from .transport import Transport, TransportError
from .worker import Worker

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    pos   INTEGER PRIMARY KEY,
    event TEXT NOT NULL
);
"""


def add(conn: sqlite3.Connection, event: Event) -> None:
    """Queue `event` inside the caller's transaction, carrying the trace of the request or
    handler that made it (the relay's publish continues that trace)."""
    row = orjson.dumps(tracing.with_current_context(event).to_dict()).decode()
    conn.execute("INSERT INTO outbox (event) VALUES (?)", (row,))


def pending(db: Database) -> int:
    return db.connection().execute("SELECT count(*) FROM outbox").fetchone()[0]


BATCH = 200  # events a relay publishes at once


class Relay(Worker):
    """A background thread that moves outbox rows to the bus, oldest first, in batches."""

    thread_name = "outbox-relay"
    what = "relaying the outbox"
    retry_on = (TransportError, sqlite3.OperationalError)

    def __init__(self, db: Database, transport: Transport, *, batch: int = BATCH, idle_wait: float = 1.0,
                 published: Callable[[list[Event]], None] = lambda events: None) -> None:
        super().__init__()
        self.db = db
        self.transport = transport
        self.published = published  # told what the transport took (the service's metrics count them)
        self.batch = batch
        self.idle_wait = idle_wait

    def relay_once(self) -> int:
        """Publish one batch; return how many events it moved (0 when the outbox is empty)."""
        rows = (
            self.db.connection()
            .execute("SELECT pos, event FROM outbox ORDER BY pos LIMIT ?", (self.batch,))
            .fetchall()
        )
        if not rows:
            return 0
        # Made as written (validated before they were): validating each again was a seventh of the relay's time.
        with tracing.publishing([Event.logged(orjson.loads(row["event"])) for row in rows]) as events:
            self.transport.publish(events)
        self.published(events)
        # Not fsynced: a delete lost in a power cut only sends those events again, and the bus
        # acknowledges an id it holds without logging it twice.
        with self.db.transaction(durable=False) as conn:
            conn.execute("DELETE FROM outbox WHERE pos <= ?", (rows[-1]["pos"],))
        self.last_error = None
        return len(rows)

    step = relay_once
