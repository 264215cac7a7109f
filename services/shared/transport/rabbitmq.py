"""The transport seam's broker implementation: RabbitMQ, through kombu.

- Publishing: a durable topic exchange, routing key = event type, persistent messages,
  publisher confirms. `publish` returns only once the broker confirmed every event, so the
  outbox relay deletes a row only after its event is safe. When a batch fails half-way, the
  relay retries all of it: events the broker already confirmed are not sent again.
- Consuming: each service its own durable queue, bound to the event types it handles,
  acknowledged only after the handler committed; kombu's ConsumerMixin reconnects with
  backoff when the broker restarts. A confirm lost in a restart means a republish: the
  consumer skips an event id it has just applied, and the handlers are idempotent by id
  (ids are keys), so a duplicate changes nothing.
- The event log: a RabbitMQ stream bound to every event, read from any offset by
  `read_log` (an event's `seq` is its stream offset + 1), so Query rebuilds as with the bus.
- Who published: each message's `app_id` property is the publishing transport's `source`;
  read back, it is the event's `source` (as the bus's `X-Blog-Source` is on HTTP).
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

from amqp.exceptions import MessageNacked
from kombu import Connection, Consumer, Exchange, Queue
from kombu.exceptions import KombuError
from kombu.mixins import ConsumerMixin

from ..config import CONSUMERS, SERVICES, service_of
from ..events import Event, InvalidEvent
from ..retry import POLICY
from . import Consumer as EventConsumer
from . import UNKNOWN_SOURCE, Description, RecentIds, TransportError, printable

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
    kind = "rabbitmq"

    def __init__(self, url: str, *, source: str | None = None, namespace: str = "blog", timeout: float = 5.0,
                 consumers: Iterable[str] = CONSUMERS) -> None:
        self.url = url
        self.source = source
        self.consumers = tuple(consumers)  # whose queues `backlog` and `reset` look for (replicas included)
        self.names = Names(namespace)
        self.timeout = timeout
        self._publisher: Connection | None = None
        self._lock = threading.Lock()  # one publishing connection, used by one thread at a time
        self._known_end = -1  # the stream's newest offset, as last seen: a lower bound of its end
        self._confirmed = RecentIds()  # a retried batch re-sends only what the broker has not confirmed
        self._workers: list[_QueueConsumer] = []
        probe = Connection(url)
        # kombu's ensure() gives up with OperationalError; a nacked publish raises MessageNacked.
        self._errors = (OSError, KombuError, MessageNacked, *probe.connection_errors, *probe.channel_errors)
        self.safe_url = printable(url)

    @classmethod
    def from_url(cls, url: str, config=None, source: str | None = None) -> RabbitTransport:
        if config is None:
            return cls(url, source=source)
        consumers = [name for name in config.instances if service_of(name) in CONSUMERS]
        return cls(url, source=source, namespace=config.broker_namespace, consumers=consumers)

    def _connection(self) -> Connection:
        return Connection(
            self.url, connect_timeout=self.timeout, heartbeat=30,
            # One retry inside kombu for a dropped channel; beyond it `publish` and the one retry policy decide.
            transport_options={"confirm_publish": True, "max_retries": 1},
        )

    def publish(self, events: Sequence[Event]) -> None:
        with self._lock:
            try:
                if self._publisher is None:
                    self._publisher = self._connection()
                producer = self._publisher.Producer(serializer="json")
                # A couple of quick reconnects inside one publish; past them the relay's retry policy takes over.
                publish = self._publisher.ensure(producer, producer.publish, max_retries=2,
                                                 interval_start=POLICY.initial)
                for event in events:
                    if event.id in self._confirmed:
                        continue
                    # With confirm_publish, py-amqp's basic_publish waits for the broker's ack (or nack).
                    publish(
                        event.to_dict(), exchange=self.names.exchange, routing_key=event.type, app_id=self.source,
                        delivery_mode=2, message_id=event.id, declare=[self.names.exchange, self.names.log],
                        timeout=self.timeout,
                    )
                    self._confirmed.add(event.id)
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

    def read_log(self, after: int = 0, limit: int = 1000, stall: float = 10.0) -> list[Event]:
        """Read the stream from offset `after` (the event with seq after + 1): up to `limit` events.

        The stream's end is looked up first, so a broker slow to deliver is waited for (up to
        `stall` seconds without a message) rather than taken for the end of the log.
        """
        events: list[Event] = []

        def on_message(body, message) -> None:
            message.ack()  # streams need acks for credit, not for state
            if len(events) < wanted:
                events.append(_event(body, message, seq=message.headers["x-stream-offset"] + 1))

        try:
            with self._connection() as conn:
                if after + limit > self._known_end + 1:  # the stream only grows: look only past what is known
                    self._known_end = self._last_offset(conn)
                wanted = min(limit, self._known_end + 1 - after)
                if wanted <= 0:
                    return []
                with conn.channel() as channel:
                    channel.basic_qos(0, min(wanted, 1000), False)
                    queue = self.names.log_from(after)(channel)
                    consumer = Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"])
                    with consumer:
                        while len(events) < wanted:
                            try:
                                conn.drain_events(timeout=stall)
                            except socket.timeout:
                                raise TransportError(
                                    f"the event stream at {self.safe_url} stalled after {len(events)} of {wanted} events"
                                ) from None
        except self._errors as exc:
            raise TransportError(f"could not read the event stream at {self.safe_url}: {exc}") from None
        return events

    def _last_offset(self, conn: Connection, settle: float = 0.3) -> int:
        """The offset of the stream's newest event (-1 when it is empty).

        Read from the "last" offset, the broker starts at the newest chunk of the stream: the
        greatest offset it delivers from there is the end.
        """
        last = -1

        def on_message(body, message) -> None:
            nonlocal last
            message.ack()
            last = max(last, message.headers["x-stream-offset"])

        with conn.channel() as channel:
            channel.basic_qos(0, 1000, False)
            queue = self.names.log_from("last")(channel)
            queue.declare()
            with Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"]):
                while True:
                    try:
                        conn.drain_events(timeout=settle)
                    except socket.timeout:
                        return last

    def start_consuming(self, name: str, consumer: EventConsumer, types: Iterable[str] = ("#",)) -> None:
        types = tuple(types)
        if not types:
            return
        worker = _QueueConsumer(name, self._connection(), self.names.queue(name, types), consumer)
        try:
            worker.declare()
        except self._errors as exc:  # the consumer declares it as soon as the broker answers
            log.warning("could not declare %s yet (%s); will on connecting", worker.queue.name, exc)
        self._workers.append(worker)
        worker.start()

    def _consumer_names(self, services: Iterable[str] | None = None) -> list[str]:
        """The formation's consumers (or `services`), and any other consumer this transport started."""
        names = self.consumers if services is None else services
        return list(dict.fromkeys([*names, *(worker.name for worker in self._workers)]))

    def queues(self, services: Iterable[str] | None = None) -> list[dict]:
        """Each consumer's queue and the stream: messages ready in it and consumers on it (None: no such queue).

        A stream keeps what it holds, and the broker does not count it reliably: read it with `read_log`.
        """
        wanted = [(f"{self.names.namespace}.{s}", s, "quorum") for s in self._consumer_names(services)]
        wanted.append((f"{self.names.namespace}.log", None, "stream"))
        found = []
        try:
            with self._connection() as conn:
                for name, service, kind in wanted:
                    try:
                        with conn.channel() as channel:
                            ok = channel.queue_declare(queue=name, passive=True)
                        exists, messages, consumers = True, ok.message_count, ok.consumer_count
                    except conn.channel_errors:
                        exists, messages, consumers = False, None, None
                    if kind == "stream":  # the broker's count for a stream is not its length: read_log is
                        messages = None
                    found.append(dict(name=name, service=service, type=kind, exists=exists, messages=messages,
                                      consumers=consumers, waiting=messages))
        except self._errors as exc:
            raise TransportError(f"broker not reachable at {self.safe_url}: {exc}") from None
        return found

    # Inspection

    def describe(self) -> Description:
        return Description(
            kind=self.kind, name="RabbitMQ", url=self.safe_url, process=None, log=f"stream {self.names.namespace}.log",
            backlog_of="queues", dead_letters=False,
        )

    def backlog(self) -> list[dict]:
        """Each consumer's queue (`waiting`: its ready messages) and the stream (the log: `waiting` None)."""
        return self.queues()

    def reset(self) -> None:
        """Remove this namespace's queues, stream and exchange from the broker."""
        try:
            with self._connection() as conn:
                for queue in self.queues([*SERVICES, *self.consumers]):
                    if queue["exists"]:
                        with conn.channel() as channel:
                            channel.queue_delete(queue["name"])
                with conn.channel() as channel:
                    channel.exchange_delete(self.names.exchange.name)
        except self._errors as exc:
            raise TransportError(f"broker not reachable at {self.safe_url}: {exc}") from None
        self._known_end = -1
        self._confirmed = RecentIds()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        with self._lock:
            self._drop_publisher()


def _event(body, message, seq: int | None = None) -> Event:
    """The event a message carries. Its source is the publisher that sent the message (the
    message's `app_id`, set from the transport's `source`), "unknown" without one; the body keeps
    what the publisher wrote in the event. The broker stamps no receive time: `time` is the publisher's."""
    event = Event.from_dict(body)
    source = message.properties.get("app_id") or UNKNOWN_SOURCE
    return Event(event.type, event.data, event.id, source, event.time, seq if seq is not None else event.seq,
                 event.typed)


class _QueueConsumer(ConsumerMixin):
    """One service's queue: apply each event, then acknowledge; reconnect when the broker goes."""

    def __init__(self, name: str, connection: Connection, queue: Queue, consumer: EventConsumer) -> None:
        self.name = name
        self.connection = connection
        self.queue = queue
        self.consumer = consumer
        self.last_error: str | None = None
        self._applied = RecentIds()  # a republished event (its confirm was lost) is skipped, not applied again
        self._failures = 0  # in a row, for the retry policy's growing wait
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def declare(self) -> None:
        """Create the queue and its bindings now, so no event published from here on is missed."""
        with self.connection.channel() as channel:
            self.queue(channel).declare()

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        return [Consumer(queues=[self.queue], callbacks=[self.on_message], accept=["json"], prefetch_count=PREFETCH)]

    @contextmanager
    def establish_connection(self):
        # kombu's own reconnect loop (it keeps the connection's state), paced by the one retry policy:
        # its default waits 2 s, 4 s, ... up to 30 s, too slow to notice a broker back.
        with self.create_connection() as conn:
            conn.ensure_connection(
                self.on_connection_error, self.connect_max_retries, interval_start=POLICY.initial,
                interval_step=POLICY.initial * 4, interval_max=POLICY.maximum,
            )
            yield conn

    def on_message(self, body, message) -> None:
        try:
            event = _event(body, message)
        except InvalidEvent as exc:
            log.error("dropping an invalid event from %s: %s", self.queue.name, exc)
            message.reject(requeue=False)
            return
        if event.id in self._applied:
            message.ack()
            return
        try:
            self.consumer([event])
        except Exception as exc:  # noqa: BLE001 - any failure: leave it for a later try
            self.last_error = str(exc)
            self._failures += 1
            log.warning("could not apply %s %s, requeued: %s", event.type, event.id, exc)
            message.requeue()
            self._stopping.wait(POLICY.delay(self._failures))  # the store is failing: do not spin on the message
            return
        self._failures = 0
        self._applied.add(event.id)
        message.ack()

    def on_connection_error(self, exc, interval) -> None:
        self.last_error = f"broker connection lost: {exc}"
        log.warning("%s; reconnecting in %.1f s", self.last_error, interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"consume-{self.queue.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.should_stop = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.connection.release()

