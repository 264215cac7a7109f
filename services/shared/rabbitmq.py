"""The transport seam's broker implementation: RabbitMQ, through kombu.

- Publishing: a durable topic exchange, routing key = event type, persistent messages,
  publisher confirms. `publish` returns only once the broker confirmed every event, so the
  outbox relay deletes a row only after its event is safe.
- Consuming: each service its own durable queue, bound to the event types it handles,
  acknowledged only after the handler committed; kombu's ConsumerMixin reconnects with
  backoff when the broker restarts. A confirm lost in a restart means a republish: the
  handlers are idempotent by id, so a duplicate changes nothing.
- The event log: a RabbitMQ stream bound to every event, read from any offset by
  `read_log` (an event's `seq` is its stream offset + 1), so Query rebuilds as with the bus.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence

from kombu import Connection, Consumer, Exchange, Queue
from kombu.mixins import ConsumerMixin

from .events import Event, InvalidEvent
from .transport import Consumer as EventConsumer
from .transport import TransportError

log = logging.getLogger(__name__)

PREFETCH = 100


class Names:
    """Exchange, stream and queue names under one namespace (default `blog`)."""

    def __init__(self, namespace: str = "blog") -> None:
        self.namespace = namespace
        self.exchange = Exchange(f"{namespace}.events", type="topic", durable=True)
        self.log = self.log_from("first")

    def log_from(self, offset: int | str) -> Queue:
        """The stream of every event, read from `offset` (a number, or "first"/"next")."""
        return Queue(
            f"{self.namespace}.log", exchange=self.exchange, routing_key="#", durable=True,
            queue_arguments={"x-queue-type": "stream"}, consumer_arguments={"x-stream-offset": offset},
        )

    def queue(self, service: str, types: Iterable[str]) -> Queue:
        from kombu import binding

        return Queue(
            f"{self.namespace}.{service}", durable=True,
            bindings=[binding(self.exchange, routing_key=t) for t in types],
            queue_arguments={"x-queue-type": "quorum"},
        )


class RabbitTransport:
    def __init__(self, url: str, *, source: str | None = None, namespace: str = "blog", timeout: float = 5.0) -> None:
        self.url = url
        self.source = source
        self.names = Names(namespace)
        self.timeout = timeout
        self._publisher: Connection | None = None
        self._lock = threading.Lock()  # one publishing connection, used by one thread at a time
        self._workers: list[_QueueConsumer] = []
        probe = Connection(url)
        self._errors = (OSError, *probe.connection_errors, *probe.channel_errors)
        self.safe_url = probe.as_uri()  # without the password

    def _connection(self) -> Connection:
        return Connection(
            self.url, connect_timeout=self.timeout, heartbeat=30,
            transport_options={"confirm_publish": True, "max_retries": 1},
        )

    def publish(self, events: Sequence[Event]) -> None:
        with self._lock:
            try:
                if self._publisher is None:
                    self._publisher = self._connection()
                producer = self._publisher.Producer(serializer="json")
                publish = self._publisher.ensure(producer, producer.publish, max_retries=2, interval_start=0.2)
                for event in events:
                    publish(
                        event.to_dict(), exchange=self.names.exchange, routing_key=event.type,
                        delivery_mode=2, message_id=event.id, declare=[self.names.exchange, self.names.log],
                    )
            except self._errors as exc:
                self._drop_publisher()
                raise TransportError(f"broker not reachable at {self.safe_url}: {exc}") from None

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.release()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self._publisher = None

    def read_log(self, after: int = 0, limit: int = 1000, idle: float = 0.3) -> list[Event]:
        """Read the stream from offset `after` (the event with seq after + 1) until `limit` or idle."""
        events: list[Event] = []

        def on_message(body, message) -> None:
            offset = message.headers["x-stream-offset"]
            message.ack()  # streams need acks for credit, not for state
            if len(events) < limit:
                events.append(_event(body, seq=offset + 1))

        try:
            with self._connection() as conn, conn.channel() as channel:
                channel.basic_qos(0, min(limit, 1000), False)
                queue = self.names.log_from(after)(channel)
                queue.declare()
                consumer = Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"])
                with consumer:
                    while len(events) < limit:
                        try:
                            conn.drain_events(timeout=idle)
                        except socket.timeout:
                            break
        except self._errors as exc:
            raise TransportError(f"could not read the event stream at {self.safe_url}: {exc}") from None
        return events

    def start_consuming(self, name: str, consumer: EventConsumer, types: Iterable[str] = ("#",)) -> None:
        types = tuple(types)
        if not types:
            return
        worker = _QueueConsumer(self._connection(), self.names.queue(name, types), consumer)
        worker.declare()
        self._workers.append(worker)
        worker.start()

    def queue_depths(self) -> dict[str, int | None]:
        """Messages waiting in each service queue and the stream (None: no such queue yet)."""
        depths: dict[str, int | None] = {}
        with self._connection() as conn:
            for service in ("posts", "comments", "query"):
                name = f"{self.names.namespace}.{service}"
                try:
                    with conn.channel() as channel:
                        depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except conn.channel_errors:
                    depths[name] = None
        return depths

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        with self._lock:
            self._drop_publisher()


def _event(body, seq: int | None = None) -> Event:
    event = Event.from_dict(body)
    if seq is not None:
        event = Event(event.type, event.data, event.id, event.source, event.time, seq, event.typed)
    return event


class _QueueConsumer(ConsumerMixin):
    """One service's queue: apply each event, then acknowledge; reconnect when the broker goes."""

    def __init__(self, connection: Connection, queue: Queue, consumer: EventConsumer) -> None:
        self.connection = connection
        self.queue = queue
        self.consumer = consumer
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None

    def declare(self) -> None:
        """Create the queue and its bindings now, so no event published from here on is missed."""
        with self.connection.channel() as channel:
            self.queue(channel).declare()

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], accept=["json"], prefetch_count=PREFETCH)]

    def on_message(self, body, message) -> None:
        try:
            event = _event(body)
        except InvalidEvent as exc:
            log.error("dropping an invalid event from %s: %s", self.queue.name, exc)
            message.reject(requeue=False)
            return
        try:
            self.consumer([event])
        except Exception as exc:  # noqa: BLE001 - any failure: leave it for a later try
            self.last_error = str(exc)
            log.warning("could not apply %s %s, requeued: %s", event.type, event.id, exc)
            message.requeue()
            time.sleep(0.5)  # the store is failing: do not spin on the same message
            return
        message.ack()

    def on_connection_error(self, exc, interval) -> None:
        self.last_error = f"broker connection lost: {exc}"
        log.warning("%s; reconnecting in %.1f s", self.last_error, interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"consume-{self.queue.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.connection.release()
