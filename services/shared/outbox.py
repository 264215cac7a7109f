"""The transactional outbox: a write and its event commit together; a relay hands events to the bus.

A post created while the bus is down is kept with its event in the outbox. The relay
publishes it when the bus is back; the bus ignores an event id it already holds, so a
retry after a lost acknowledgement does not log the same event twice.

On PostgreSQL several replicas of a writer share one outbox, each with its relay, and no leader:
a relay claims rows with `FOR UPDATE SKIP LOCKED` in a transaction, publishes them and deletes
them in that transaction, so no two relays publish the same row. A post's events stay in order:
each row names its aggregate (the post it is about), and a relay claims whole aggregates by
locking the oldest row of each; the next row of a post becomes claimable only once the rows
before it are published and deleted (docs/postgresql.md).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from . import logs, tracing
from .db import UNAVAILABLE, Connection, Database, ensure_column
from .events import Event
from .transport import Transport, TransportError
from .worker import Worker

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    pos       INTEGER PRIMARY KEY,
    event     TEXT NOT NULL,
    aggregate TEXT NOT NULL DEFAULT ''  -- the post the event is about: its events are published in order
);
"""


def prepare(db: Database) -> None:
    """Bring an outbox made before `aggregate` up to date. (No index: rows leave as soon as they are
    relayed, so the outbox is short, and claiming scans it.)"""
    ensure_column(db, "outbox", "aggregate", "TEXT NOT NULL DEFAULT ''")


def aggregate_of(event: Event) -> str:
    """The post an event is about (a post's own id, or a comment's postId)."""
    data = event.data if isinstance(event.data, dict) else {}
    return str(data.get("postId") or data.get("id") or "")


def add(conn: Connection, event: Event) -> None:
    """Queue `event` inside the caller's transaction, carrying the trace of the request or
    handler that made it (the relay's publish continues that trace)."""
    row = orjson.dumps(tracing.with_current_context(event).to_dict()).decode()
    conn.execute("INSERT INTO outbox (event, aggregate) VALUES (?, ?)", (row, aggregate_of(event)))


def pending(db: Database) -> int:
    return db.connection().execute("SELECT count(*) FROM outbox").fetchone()[0]


BATCH = 200  # events a relay publishes at once

# The oldest row of each post not claimed by another relay: holding it, a relay owns that post's rows.
CLAIM_AGGREGATES = """
SELECT aggregate FROM outbox WHERE pos IN (SELECT min(pos) FROM outbox GROUP BY aggregate)
ORDER BY pos LIMIT ? FOR UPDATE SKIP LOCKED
"""
# Every row of the posts claimed, oldest first: no other relay can lock them while their first is held.
CLAIM_ROWS = "SELECT pos, event FROM outbox WHERE aggregate = ANY(?) ORDER BY pos LIMIT ? FOR UPDATE"


class Relay(Worker):
    """A background thread that moves outbox rows to the bus, oldest first, in batches."""

    thread_name = "outbox-relay"
    what = "relaying the outbox"
    retry_on = (TransportError, *UNAVAILABLE)

    def __init__(self, db: Database, transport: Transport, *, batch: int = BATCH, idle_wait: float = 1.0,
                 published: Callable[[list[Event]], None] = lambda events: None) -> None:
        super().__init__()
        self.db = db
        self.transport = transport
        self.published = published  # told what the transport took (the service's metrics count them)
        self.batch = batch
        self.idle_wait = idle_wait
        prepare(db)

    def relay_once(self) -> int:
        """Publish one batch; return how many events it moved (0 when the outbox is empty)."""
        moved = self._claim_and_publish() if self.db.concurrent else self._publish_oldest()
        self.last_error = None
        return moved

    def _publish_oldest(self) -> int:
        """The only relay of its outbox: read the oldest rows, publish, then delete them.

        Not fsynced: a delete lost in a power cut only sends those events again, and the bus
        acknowledges an id it holds without logging it twice."""
        rows = (
            self.db.connection()
            .execute("SELECT pos, event FROM outbox ORDER BY pos LIMIT ?", (self.batch,))
            .fetchall()
        )
        if rows:
            self._publish(rows)
            with self.db.transaction(durable=False) as conn:
                conn.execute("DELETE FROM outbox WHERE pos <= ?", (rows[-1]["pos"],))
        return len(rows)

    def _claim_and_publish(self) -> int:
        """One of many relays of its outbox: claim rows, publish and delete them in one transaction
        (a relay that dies before its commit lets go of its rows, and another publishes them)."""
        with self.db.transaction(durable=False) as conn:
            claimed = [row[0] for row in conn.execute(CLAIM_AGGREGATES, (self.batch,))]
            if not claimed:
                return 0
            rows = conn.execute(CLAIM_ROWS, (claimed, self.batch)).fetchall()
            self._publish(rows)
            conn.execute("DELETE FROM outbox WHERE pos = ANY(?)", ([row["pos"] for row in rows],))
        return len(rows)

    def _publish(self, rows: list) -> None:
        # Made as written (validated before they were): validating each again was a seventh of the relay's time.
        with tracing.publishing([Event.logged(orjson.loads(row["event"])) for row in rows]) as events:
            self.transport.publish(events)
        self.published(events)
        logs.event_lines("published", events)

    step = relay_once
