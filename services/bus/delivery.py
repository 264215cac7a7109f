"""Delivery from the log to each subscriber: its own thread, its own persisted cursor.

At-least-once and in log order: the cursor moves only after the subscriber answered 2xx (or,
for a subscriber streaming the log instead, stream.py, when it says what it has applied).
A subscriber that is down or slow is retried with capped backoff in its own thread, so it
never holds up the others. A subscriber that answers but keeps rejecting one event (an HTTP
error status, `attempts` times) gets that event parked as a dead letter, and the events after
it flow on; `redeliver` sends a parked one again.

A subscriber may be a group (the replicas of a service sharing one store, `Subscriber.members`):
one cursor, each batch sent to one member. The member that took the last batch gets the next;
when it fails, the same batch goes at once to the next member in turn, which then keeps it.
Handing over only on failure keeps one member busy rather than spreading the load: the members'
batches take turns on their shared position's lock anyway, so spreading would gain nothing.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import orjson

from services.shared import logs, signing, tracing
from services.shared.config import Subscriber
from services.shared.events import utc_now
from services.shared.http import Answer, HttpClient, Unreachable
from services.shared.tracing import trace_headers
from services.shared.worker import Worker

from .log import EventLog, row_to_event, row_to_json

log = logging.getLogger(__name__)


class Poster(Protocol):
    """What the deliverer sends through: an `HttpClient`, or a fake in the tests."""

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer: ...

    def close(self) -> None: ...


ACK_LATE = 0.5  # seconds a streaming subscriber may take to acknowledge before the others are served anyway


class DeliveryFailed(Exception):
    """The subscriber did not take the batch; it will be sent again."""


class Rejected(DeliveryFailed):
    """The subscriber answered, with an error status."""


@dataclass
class DeliveryStatus:
    name: str
    url: str  # where it delivers now (a group's member that took the last batch)
    cursor: int
    failures: int = 0  # consecutive failed attempts
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivered_at: float | None = None
    dead_letters: int = 0
    delivered: int = 0  # events taken, ever (its metrics' counter)
    failed: int = 0  # attempts that failed, ever
    members: list[str] | None = None  # a group's members' addresses (None: not a group)
    streaming: int = 0  # its streams open (stream.py): while any is, nothing is pushed to it


@contextmanager
def delivered_items(rows: list, subscriber: str) -> Iterator[list[str]]:
    """The rows as the wire JSON of their events, inside a `deliver` span for the sampled ones (each
    of those carrying that span as its trace context): what is sent to `subscriber`, pushed or streamed."""
    items = [row_to_json(row) for row in rows]
    traced = [i for i, row in enumerate(rows) if tracing.sampled(row["traceparent"])]
    if not traced or tracing.active() is None:
        yield items
        return
    with tracing.delivering([row_to_event(rows[i]) for i in traced], subscriber) as carried:
        for i, event in zip(traced, carried, strict=True):
            items[i] = orjson.dumps({**orjson.loads(items[i]), **trace_headers(event)}).decode()
        yield items
    logs.event_lines("delivered", carried, seqs=[rows[i]["seq"] for i in traced],  # once they were taken
                     detail=f"to {subscriber}", subscriber=subscriber)


class Deliverer(Worker):
    retry_on = DeliveryFailed

    def __init__(
        self,
        event_log: EventLog,
        subscriber: Subscriber,
        *,
        batch_size: int = 100,
        timeout: float = 5.0,
        attempts: int = 10,
        max_backoff: float = 5.0,
        secret: str | None = None,
        client: Poster | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        super().__init__(wake=wake or event_log.wakeup())  # woken by every append that adds events
        self.log = event_log
        self.subscriber = subscriber
        self.thread_name = f"deliver-{subscriber.name}"
        self.what = f"delivering to {subscriber.name}"
        self.batch_size = batch_size if subscriber.batch else 1
        self.attempts = attempts
        self.max_backoff = max_backoff
        self.secret = secret
        self.status = DeliveryStatus(
            subscriber.name, subscriber.url, event_log.cursor(subscriber.name),
            dead_letters=len(event_log.dead_letters(subscriber.name)),
            members=list(subscriber.members) if subscriber.also else None,
        )
        self._member = 0  # which of the subscriber's members is sent to first
        self.followers: list[Deliverer] = []  # woken after each of this one's steps (see Delivery's `first`)
        self._rejections = 0
        self._isolate_until = 0  # after a rejected batch: one event at a time up to here, to find the bad one
        self._unacknowledged_since = 0.0  # when a stream sent what its subscriber has not yet said it applied
        # Shared by the delivery thread and `redeliver` (a request thread): the pool is thread-safe.
        self.client = client or HttpClient(timeout=(min(1.0, timeout), timeout), connections=2)

    def post(self, rows: list) -> None:
        """Send rows to the subscriber; raise DeliveryFailed unless it answers 2xx. A sampled event's
        `deliver` span goes with it, as its trace context."""
        with delivered_items(rows, self.subscriber.name) as items:
            self._send(items)

    def _send(self, items: list[str]) -> None:
        """To the member that took the last batch, else to each next one in turn until one takes it;
        Rejected when one answered with an error status (and none took it), else DeliveryFailed."""
        body = (f"[{','.join(items)}]" if self.subscriber.batch else items[0]).encode()
        headers = signing.headers(self.secret, body)
        members = self.subscriber.members
        errors: list[tuple[str, DeliveryFailed]] = []
        for turn in range(len(members)):
            member = (self._member + turn) % len(members)
            try:
                self._post_to(members[member], body, headers)
            except DeliveryFailed as exc:
                errors.append((members[member], exc))
                continue
            self._member = member
            self.status.url = members[member]
            return
        self._member = (self._member + 1) % len(members)  # the next attempt starts at the next member
        if len(errors) == 1:
            raise errors[0][1]
        rejected = any(isinstance(exc, Rejected) for _, exc in errors)
        named = "; ".join(f"{url}: {exc}" for url, exc in errors)
        raise (Rejected if rejected else DeliveryFailed)(f"no member took it ({named})")

    def _post_to(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            response = self.client.post(url, body, headers)
        except Unreachable as exc:
            self.status.failed += 1
            raise DeliveryFailed(str(exc)) from None
        if not 200 <= response.status_code < 300:
            self.status.failed += 1
            raise Rejected(f"HTTP {response.status_code}: {response.text[:200]}")

    def deliver_once(self) -> int:
        """Send the next batch after the cursor; return how many events it moved past (0: none left,
        or the subscriber takes the log as a stream: `streamed`)."""
        if self.status.streaming:
            return 0
        cursor = self.status.cursor
        limit = 1 if cursor < self._isolate_until else self.batch_size
        rows = list(self.log.read_after(cursor, limit=limit))
        if not rows:
            return 0
        try:
            self.post(rows)
        except Rejected as exc:
            self._rejections += 1
            if self._rejections < self.attempts:
                raise
            if len(rows) > 1:
                self._isolate_until = rows[-1]["seq"]
                self._rejections = 0
                raise
            self._park(rows[0]["seq"], str(exc))
            return 1
        self.log.advance(self.subscriber.name, rows[-1]["seq"])
        self._moved_to(rows[-1]["seq"])
        self.status.delivered += len(rows)
        self.status.last_delivered_at = time.time()
        return len(rows)

    def _park(self, seq: int, error: str) -> None:
        log.error("%s rejected event %d %d times; parked as a dead letter: %s",
                  self.subscriber.name, seq, self._rejections, error)
        self.log.park(self.subscriber.name, seq, self._rejections, error, utc_now())
        self.status.dead_letters += 1
        self._moved_to(seq)

    def _moved_to(self, seq: int) -> None:
        self.status.cursor = seq
        self.status.failures = 0
        self._rejections = 0

    def rewind(self) -> None:
        """Back to the start of an emptied log."""
        self._moved_to(0)
        self._isolate_until = 0
        self.status.dead_letters = 0

    def redeliver(self, seq: int) -> None:
        """Send one dead letter again, now; it leaves the dead letters only if the subscriber takes it."""
        row = self.log.dead_letter(self.subscriber.name, seq)
        if row is None:
            raise LookupError(f"no dead letter {seq} for {self.subscriber.name}")
        self.post([row])
        self.log.forget_dead_letter(self.subscriber.name, seq)
        self.status.dead_letters -= 1

    def streamed(self, count: int) -> None:
        """The subscriber's stream (stream.py) has just sent it `count` events. The cursor moves, and the
        followers are woken, when it says it has applied them (`acknowledged`), as after a delivery
        taken; a subscriber silent for `ACK_LATE` seconds no longer holds the followers back."""
        self.status.failures = 0
        self.status.delivered += count
        self.status.last_delivered_at = now = time.time()
        if not self._unacknowledged_since:
            self._unacknowledged_since = now
        elif now - self._unacknowledged_since > ACK_LATE:
            self._wake_followers()

    def acknowledged(self, seq: int) -> None:
        """The subscriber has every event up to `seq` (it says so after applying what a stream sent):
        its cursor moves there, and the followers are woken, as after a delivery taken."""
        self._unacknowledged_since = 0.0
        seq = min(seq, self.log.last_seq())  # a position counted in an emptied log moves nothing past the end
        if seq > self.status.cursor:
            self.log.advance(self.subscriber.name, seq)
            self.status.cursor = max(self.status.cursor, seq)
        self._wake_followers()

    def step(self) -> int:
        try:
            return self.deliver_once()
        finally:
            if not self.status.streaming:  # a stream wakes them after each of its sends
                self._wake_followers()

    def _wake_followers(self) -> None:
        for follower in self.followers:
            follower.notify()

    def on_error(self, exc: BaseException, attempt: int) -> None:
        self.status.failures = attempt
        self.status.last_error = str(exc)
        self.status.last_error_at = time.time()

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self.client.close()


class Delivery:
    """All subscribers' deliverers, started and stopped together.

    `first`: the subscribers served first (Query, whose view a reader waits for). The others are
    woken once a first one has taken its batch, so on two cores they do not compete with it for
    the CPU; while a first one is failing, an append wakes them at once, as it wakes the first.
    """

    def __init__(self, event_log: EventLog, subscribers: tuple[Subscriber, ...], *,
                 first: tuple[str, ...] = (), **options) -> None:
        leads = [s for s in subscribers if s.name in first]
        self.deliverers = {s.name: Deliverer(event_log, s, **options) for s in leads}
        if leads:
            gate = _Gate(list(self.deliverers.values()))
            event_log.add_wakeup(gate)
        for s in subscribers:
            if s.name not in self.deliverers:
                follower = Deliverer(event_log, s, wake=threading.Event() if leads else None, **options)
                self.deliverers[s.name] = follower
                if leads:
                    gate.followers.append(follower)
                    for lead in gate.leads:
                        lead.followers.append(follower)
        self.deliverers = {s.name: self.deliverers[s.name] for s in subscribers}  # in the configured order

    def start(self) -> None:
        for deliverer in self.deliverers.values():
            deliverer.start()

    def stop(self) -> None:
        for deliverer in self.deliverers.values():
            deliverer.stop()

    def reset(self) -> None:
        """The log was emptied: every subscriber starts from its beginning again."""
        for deliverer in self.deliverers.values():
            deliverer.rewind()

    def statuses(self) -> list[DeliveryStatus]:
        return [d.status for d in self.deliverers.values()]


class _Gate:
    """Set by every append: passes the wake-up to the followers only while a lead is failing
    (a lead that delivers wakes them itself, after its step)."""

    def __init__(self, leads: list[Deliverer]) -> None:
        self.leads = leads
        self.followers: list[Deliverer] = []

    def set(self) -> None:
        if any(lead.status.failures for lead in self.leads):
            for follower in self.followers:
                follower.notify()
