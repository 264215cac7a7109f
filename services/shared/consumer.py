"""How a service takes events: the ones pushed to it, and the log itself when it is new or behind.

Pushed events arrive through the transport (the bus's `POST /events`, a broker's queue, the
in-memory bus). Every consuming service also keeps its position in the log (`applied_seq`:
up to there it has every event) and a catch-up that reads the log from that position: at
start, and whenever a pushed event shows a gap. So a service that was down, or whose queue
was declared only after earlier events were published, still gets every event it missed.
Applying is idempotent, so an event that comes both ways changes nothing the second time.
"""
from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from flask import Flask

from . import logs, tracing
from .components import components
from .db import UNAVAILABLE, Connection, Database, ensure_column
from .events import C, Event, Handler, Handlers, by_type_name, dispatch
from .metrics import metrics_of
from .transport import Transport, TransportError
from .web import events_blueprint
from .worker import Worker

log = logging.getLogger(__name__)

POSITION_SCHEMA = """
CREATE TABLE IF NOT EXISTS position (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    applied_seq INTEGER NOT NULL,
    origin      TEXT      -- the id of the first event of the log applied_seq counts in (LogOrigin)
);
INSERT INTO position (one, applied_seq) VALUES (1, 0) ON CONFLICT DO NOTHING;
"""


def process(handlers: Mapping[str, Handler[C]], event: Event, ctx: C) -> bool:
    """`dispatch` inside the event's trace: a `process <type>` span when the event is sampled and
    handled here (a type nobody here handles is acknowledged without one)."""
    if event.type not in handlers:
        return False
    with tracing.consuming(event):
        return dispatch(handlers, event, ctx)


class Store(Protocol):
    """What a consuming service's store offers: apply a batch (True when a gap was seen), and its position."""

    db: Database  # holds the position (`POSITION_SCHEMA`)

    def apply(self, events: list[Event], *, from_log: bool = False) -> bool: ...

    @property
    def applied_seq(self) -> int: ...


Apply = Callable[..., bool]  # (events, *, from_log=False) -> whether a gap was seen


def applied_seq(db: Database) -> int:
    return db.connection().execute("SELECT applied_seq FROM position").fetchone()[0]


class LogOrigin:
    """Which log a consumer's position counts in, known by the id of that log's first event.

    A position is a number in one log. Pointed at another one (the data directory of a formation
    on the HTTP bus, started again on RabbitMQ; a bus whose log was deleted), the number means
    nothing there: kept, it would make the catch-up skip that many of the new log's events. So
    each catch-up first reads the log's first event; when it is not the one the position was
    counted from, the consumer reads the log from its start again (applying is idempotent).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        ensure_column(db, "position", "origin", "TEXT")  # a position made before this was kept

    def check(self, transport: Transport) -> str | None:
        """Start the position over when `transport`'s log is another one; returns why it did (None: same log)."""
        first = transport.read_log(after=0, limit=1)
        origin = first[0].id if first else None
        with self.db.transaction(durable=False) as conn:
            seq, known = conn.execute("SELECT applied_seq, origin FROM position").fetchone()
            if origin == known:
                return None
            conn.execute("UPDATE position SET origin = ?", (origin,))
            if known is None and origin is not None:  # first look at a log: whatever position it has counts in it
                return None
            conn.execute("UPDATE position SET applied_seq = 0")
        if seq == 0:
            return None
        now = f"first event {origin}" if origin else "empty"
        return f"the log is not the one its position {seq} counted in (that one began with event {known}; this one is {now})"


def apply_batch(
    db: Database, events: list[Event], handle: Callable[[Connection, list[Event]], None], *, from_log: bool
) -> bool:
    """In one transaction: `handle(conn, events)` in log order, then move the position past them.

    `from_log`: the events are a contiguous read of the log, so the position moves to the last
    one. Pushed events move it only while they follow on without a gap; an event pushed without
    a position (a broker's queue carries none) leaves it where it is. Returns True on a gap.
    """
    events = sorted(events, key=lambda e: e.seq or 0)
    with db.transaction() as conn:
        # The position's row locked first: replicas sharing a PostgreSQL schema apply one batch at a
        # time, each reading the position the last one left (on SQLite the transaction already is alone).
        applied = conn.execute("UPDATE position SET applied_seq = applied_seq RETURNING applied_seq").fetchone()[0]
        handle(conn, events)
        gap = False
        for event in events:
            if event.seq is None:
                continue
            if from_log or event.seq == applied + 1:
                applied = max(applied, event.seq)
            elif event.seq > applied + 1:
                gap = True
        conn.execute("UPDATE position SET applied_seq = ?", (applied,))
    return gap


T = TypeVar("T", bound="ConsumingStore")


@dataclass(frozen=True)
class Context(Generic[T]):
    """What a handler of a `ConsumingStore` gets as `ctx`: the batch's transaction and the store."""

    conn: Connection
    store: T


class ConsumingStore:
    """A consuming service's store whose events go through its handler table, each handler called
    as `handler(data, event, Context(conn, store))` inside the batch's transaction."""

    def __init__(self, db: Database, handlers: Handlers[Context]) -> None:
        self.db = db
        self.handlers = by_type_name(handlers)

    @property
    def applied_seq(self) -> int:
        return applied_seq(self.db)

    def apply(self, events: list[Event], *, from_log: bool = False) -> bool:
        """Apply delivered events in one transaction; a redelivered one changes nothing."""
        def handle(conn: Connection, ordered: list[Event]) -> None:
            ctx = Context(conn, self)
            for event in ordered:
                process(self.handlers, event, ctx)

        return apply_batch(self.db, events, handle, from_log=from_log)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (one catch-up), then a young collection.

    Applying a page makes thousands of objects that live until the page is done, and Query's view
    keeps each post's; at CPython's default the collector ran every 700 allocations and its
    passes over that growing heap were half of a rebuild's CPU (measured: docs/performance-redesign.md).
    Nothing here makes reference cycles in bulk. Only for the catch-up: the process's thresholds stay
    CPython's, so a service's steady state is as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
            gc.collect(1)


class CatchUp(Worker):
    """Reads the log after the service's position: once at start, then whenever `request()` is called."""

    what = "catching up from the event log"
    retry_on = (TransportError, *UNAVAILABLE)
    idle_wait = None  # caught up: sleep until a gap is seen

    def __init__(self, name: str, apply: Apply, position: Callable[[], int], transport: Transport, *,
                 origin: LogOrigin | None = None, page: int = 5000) -> None:
        super().__init__()
        self.thread_name = f"{name}-catch-up"
        self.name = name
        self.apply = apply
        self.position = position
        self.origin = origin
        self.transport = transport
        self.page = page
        self.running = False
        self.last_run: dict | None = None  # events read and seconds taken by the last catch-up
        self.caught_up = False  # a pass has read the log to its end

    def catch_up_once(self) -> int:
        """Apply the log after `applied_seq` until its end; return how many events were read.

        The transport fetches the next page while this one is applied (`read_ahead`): the bus or
        broker reading its log then overlaps with applying (SQLite) instead of taking turns.
        """
        read = 0
        started = time.perf_counter()
        if self.origin is not None and (why := self.origin.check(self.transport)):
            log.warning("%s: %s; reading it from its start", self.name, why)
        pages = self.transport.iter_log(after=self.position(), page=self.page)
        with collector_paused():
            for events in pages:
                self.apply(events, from_log=True)
                read += len(events)
        self.last_error = None
        if read:
            self.last_run = {"events": read, "seconds": round(time.perf_counter() - started, 3)}
        return read

    def step(self) -> int:
        self.running = True
        try:
            read = self.catch_up_once()
        finally:
            self.running = False
        self.caught_up = True
        return read

    request = Worker.notify  # a gap was seen: catch up soon, in the background

    def health(self) -> dict:
        return dict(catching_up=self.running, caught_up=self.caught_up, catch_up_error=self.last_error,
                    last_catch_up=self.last_run)


class Subscription:
    """The transport delivering a service's event types into its consumer, from `start()` on.

    `position`: the consumer's own position in the log, for a service that follows the log as a
    stream where the transport offers one (the HTTP bus: services/bus/stream.py)."""

    def __init__(self, name: str, transport: Transport, consume: Callable[[list[Event]], None],
                 types: Iterable[str], *, position: Callable[[], int | None] | None = None) -> None:
        self.name = name
        self.transport = transport
        self.consume = consume
        self.types = tuple(types)  # what it subscribes to: its handler table's event types
        self.position = position

    def start(self) -> None:
        self.transport.start_consuming(self.name, self.consume, types=self.types, position=self.position)

    def stop(self) -> None:
        """Nothing here: closing the transport (stopped after this) ends its consumers."""


def register_consumer(app: Flask, name: str, store: Store, transport: Transport, types: Iterable[str], *,
                      then: Callable[[], None] = lambda: None, subscription: str | None = None,
                      follow_log: bool = False) -> CatchUp:
    """Make `name` (a service, or a replica of one: `query.2`) a consumer of the event `types`
    its handlers take: its `POST /events` route, its subscription and its catch-up, all applying
    through `store.apply`, each applied batch followed by `then()` (wake the outbox relay, for a
    service that emits). `build_service` calls it for every service with handlers.

    `subscription`: the name it consumes under (default `name`). Replicas sharing one store share
    one (`Config.subscription`): the transport hands each event to one of them. Their catch-ups
    read the log from the one position they share, each batch applied under its row's lock.
    `follow_log`: take the log as a stream from its position where the transport offers one."""

    applied = metrics_of(app).applied
    types = tuple(types)
    handled = frozenset(types)

    def apply(events: list[Event], *, from_log: bool = False) -> bool:
        gap = store.apply(events, from_log=from_log)
        applied(events)
        logs.event_lines("applied", [event for event in events if event.type in handled],
                         detail="from the log" if from_log else "")
        then()
        return gap

    catch_up = CatchUp(name, apply, lambda: store.applied_seq, transport, origin=LogOrigin(store.db))

    def consume(events: list[Event]) -> None:
        if apply(events):
            catch_up.request()

    parts = components(app)

    def position() -> int | None:
        # None until the catch-up has read what the consumer lacked: a stream opened meanwhile would
        # carry the same events beside it (a rebuild from empty read the whole log twice).
        return store.applied_seq if catch_up.caught_up else None

    parts.add("consumer", Subscription(subscription or name, transport, consume, types,
                                       position=position if follow_log else None))
    parts.add("catch-up", catch_up)
    app.register_blueprint(events_blueprint(consume))
    return catch_up
