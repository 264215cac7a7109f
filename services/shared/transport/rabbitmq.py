"""The transport seam's broker implementation: RabbitMQ, through kombu.

- Publishing: a durable topic exchange, routing key = event type, persistent messages,
  publisher confirms. `publish` returns only once the broker confirmed every event, so the
  outbox relay deletes a row only after its event is safe. When a batch fails half-way, the
  relay retries all of it: events the broker already confirmed are not sent again.
- Consuming: each subscription its own durable queue, bound to the event types it handles,
  acknowledged only after the handler committed. A service whose replicas share one store
  (`Config.subscription`) has one queue they all consume from (competing consumers: each
  message to one of them; one that goes, its unacknowledged messages go to the others); each
  Query replica has its own; kombu's ConsumerMixin reconnects with
  backoff when the broker restarts. A confirm lost in a restart means a republish: the
  consumer skips an event id it has just applied, and the handlers are idempotent by id
  (ids are keys), so a duplicate changes nothing.
- The event log: a RabbitMQ stream bound to every event, read from any offset by
  `read_log` (an event's `seq` is its stream offset + 1), so Query rebuilds as with the bus:
  over the stream protocol, chunks at a time (rabbit_stream.py), when the broker has its
  `rabbitmq_stream` plugin on; else over AMQP, a message at a time.
- Consumers acknowledge a batch with one ack; py-amqp's socket reads and writes go through
  amqp_wire.py (fewer system calls).
- Who published: each message's `app_id` property is the publishing transport's `source`;
  read back, it is the event's `source` (as the bus's `X-Blog-Source` is on HTTP).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import replace
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import amqp
import orjson
from amqp.exceptions import MessageNacked
from kombu import Connection, Consumer, Exchange, Queue
from kombu.exceptions import KombuError
from kombu.mixins import ConsumerMixin

from services.table import CONSUMERS, SERVICES

from ..config import service_of
from ..events import Event, InvalidEvent
from ..retry import POLICY
from ..tracing import TRACEPARENT, TRACESTATE, trace_headers
from . import Consumer as EventConsumer
from . import PAGE, UNKNOWN_SOURCE, Description, ParksNone, RecentIds, TransportError, printable, read_ahead
from .amqp_wire import TRANSPORT, coalesced_writes
from .rabbit_stream import STREAM_PORT, StreamLog, StreamUnavailable

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


class RabbitTransport(ParksNone):
    kind = "rabbitmq"
    messaging_system = "rabbitmq"  # what a trace's `messaging.system` says
    between_processes = True

    def __init__(self, url: str, *, source: str | None = None, namespace: str = "blog", timeout: float = 5.0,
                 consumers: Iterable[str] = CONSUMERS, stream_port: int | None = STREAM_PORT) -> None:
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
        # Plain AMQP reads ahead (amqp_wire); TLS keeps py-amqp's own transport.
        self._kombu_transport = None if "amqps:" in url.lower() else TRANSPORT
        self.stream_port = stream_port  # where the stream protocol is looked for (None: read the log over AMQP)
        self._stream_log: StreamLog | None | bool = None  # how the log is read: None undecided, False over AMQP
        self._stream_lock = threading.Lock()
        self.read_over = ""  # how the log is read, in words, once decided

    @classmethod
    def from_url(cls, url: str, config=None, source: str | None = None) -> RabbitTransport:
        if config is None:
            return cls(url, source=source)
        # one queue per subscription: the replicas of a service sharing one store compete on one
        consumers = dict.fromkeys(config.subscription(name) for name in config.instances if service_of(name) in CONSUMERS)
        return cls(url, source=source, namespace=config.broker_namespace, consumers=consumers)

    def _connection(self, *, publishing: bool = False) -> Connection:
        # One retry inside kombu for a dropped channel; beyond it `publish` and the one retry policy decide.
        # The publisher reads its confirms itself (_ConfirmingPublisher): py-amqp must not wait for each.
        return Connection(
            self.url, connect_timeout=self.timeout, heartbeat=30, transport=self._kombu_transport,
            transport_options={"confirm_publish": not publishing, "max_retries": 1},
        )

    def publish(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        """Publish a batch with every message in flight at once, then wait for the broker's confirms.

        py-amqp's own confirmed publish waits for each message's ack before sending the next:
        one round trip per event. Here the batch goes out back to back on a channel in confirm
        mode and the acks (often one `multiple` ack for many) are read afterwards.
        """
        with self._lock:
            try:
                if self._publisher is None:
                    self._publisher = _ConfirmingPublisher(self._connection(publishing=True), self.names)
                fresh = [event for event in events if event.id not in self._confirmed]
                waited = self.timeout if timeout is None else timeout
                for event_id in self._publisher.publish(fresh, source=self.source, timeout=waited):
                    self._confirmed.add(event_id)
            except self._errors as exc:
                self._drop_publisher()
                raise TransportError(f"broker not reachable at {self.safe_url}: {exc}") from None

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def read_log(self, after: int = 0, limit: int = 1000, stall: float = 10.0) -> list[Event]:
        """Read the stream from offset `after` (the event with seq after + 1): up to `limit` events.

        Over the stream protocol when the broker has its plugin on (chunks of the log at a time),
        else over AMQP. Either way the stream's end is looked up first, so a broker slow to deliver
        is waited for (up to `stall` seconds without a message) rather than taken for the end of the log.
        """
        return _decode_log(self._fetch_log(after, limit, stall))

    def _fetch_log(self, after: int, limit: int, stall: float = 10.0) -> list[Event] | list[tuple[int, bytes, str | None]]:
        """Events read over AMQP, or the stream protocol's entries (offset, body, publisher), not decoded yet."""
        reader = self._log_reader()
        if not reader:
            return self._read_log_amqp(after, limit, stall)
        try:
            return reader.read(after, limit, stall)
        except StreamUnavailable as exc:
            with self._stream_lock:
                self._drop_stream_log()  # decided again at the next read: the broker may be back, or another
            raise TransportError(f"could not read the event stream at {self.safe_url}: {exc}") from None

    def _log_reader(self) -> StreamLog | bool:
        """The stream protocol's reader when the broker has the `rabbitmq_stream` plugin on, else False
        (read over AMQP). Decided at the first read, and again after a failed one; said in the log when it changes."""
        with self._stream_lock:
            if self._stream_log is None:
                reader, found = None, "not looked for"
                if self.stream_port is not None:
                    try:
                        with self._connection() as conn:
                            conn.connect()
                            cluster = conn.connection.server_properties.get("cluster_name")
                    except self._errors as exc:
                        raise TransportError(f"could not read the event stream at {self.safe_url}: {exc}") from None
                    reader, found = StreamLog.open(self.url, self.names.log.name, cluster, timeout=self.timeout,
                                                   port=self.stream_port)
                read_over = (f"the stream protocol ({found})" if reader else
                             f"AMQP (the broker's stream plugin, rabbitmq_stream: {found})")
                if read_over != self.read_over:
                    log.info("reading the event stream %s over %s", self.names.log.name, read_over)
                    self.read_over = read_over
                self._stream_log = reader or False
            return self._stream_log

    def _read_over(self) -> str:
        """How `read_log` reads the stream ("the stream protocol (...)" or "AMQP (...)"), deciding it if not yet."""
        try:
            self._log_reader()
        except TransportError:
            pass
        return self.read_over

    def _drop_stream_log(self) -> None:
        if self._stream_log:
            self._stream_log.close()
        self._stream_log = None

    def _read_log_amqp(self, after: int, limit: int, stall: float) -> list[Event]:
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

    def start_consuming(self, name: str, consumer: EventConsumer, types: Iterable[str] = ("#",), *,
                        position: Callable[[], int | None] | None = None) -> None:  # its own queue pushes: `position` unused
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
                    extra = {}
                    if kind == "stream":  # the broker's count for a stream is not its length: read_log is
                        messages = None
                        extra["read_over"] = self._read_over()
                    found.append(dict(name=name, service=service, type=kind, exists=exists, messages=messages,
                                      consumers=consumers, waiting=messages, **extra))
        except self._errors as exc:
            raise TransportError(f"broker not reachable at {self.safe_url}: {exc}") from None
        return found

    # Inspection

    def describe(self) -> Description:
        return Description(
            kind=self.kind, name="RabbitMQ", url=self.safe_url, process=None, log=f"stream {self.names.namespace}.log",
            backlog_of="queues", dead_letters=False, filters_by_type=True,
        )

    def iter_log(self, after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
        return read_ahead(self._fetch_log, lambda fetched, after, page: _decode_log(fetched), after, page)

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
        with self._lock:
            self._drop_publisher()  # it declared the exchange and the stream once: the next publish declares them again
        with self._stream_lock:
            if self._stream_log:
                self._stream_log.known_end = -1

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        with self._lock:
            self._drop_publisher()
        with self._stream_lock:
            self._drop_stream_log()


class _ConfirmingPublisher:
    """One connection and channel in confirm mode, publishing batches with all their messages in flight."""

    def __init__(self, connection: Connection, names: Names) -> None:
        self.connection = connection
        self.names = names
        self.channel = connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._acked)
        self.channel.events["basic_nack"].add(self._nacked)
        self._last_tag = 0  # the broker numbers a confirm channel's messages 1, 2, ...
        self._pending: dict[int, str] = {}  # delivery tag -> event id, until the broker answers
        self._confirmed: list[str] = []
        self._refused: list[str] = []
        self._declared = False

    def _settle(self, tag: int, multiple: bool, into: list[str]) -> None:
        for settled in [t for t in self._pending if t <= tag] if multiple else [tag]:
            if settled in self._pending:
                into.append(self._pending.pop(settled))

    def _acked(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self._confirmed)

    def _nacked(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self._refused)

    def publish(self, events: Sequence[Event], *, source: str | None, timeout: float) -> list[str]:
        """Send `events`, wait up to `timeout` for their confirms; the ids the broker confirmed.

        Raises MessageNacked when the broker refused one, socket.timeout when it did not answer:
        the caller sends the batch again, less what was confirmed.
        """
        if not self._declared:
            self.names.exchange(self.channel).declare()
            self.names.log(self.channel).declare()
            self._declared = True
        self._confirmed, self._refused = [], []
        exchange = self.names.exchange.name
        with coalesced_writes(self.connection.connection):  # the batch in one write, not one per message
            for event in events:
                # The message as kombu's consumers read it (JSON, UTF-8), built here: kombu's Producer
                # costs most of a millisecond of CPU per message, which was the limit of a batch.
                message = amqp.Message(orjson.dumps(event.to_dict()), content_type="application/json",
                                       content_encoding="utf-8", delivery_mode=2, message_id=event.id,
                                       application_headers=trace_headers(event),
                                       **({"app_id": source} if source else {}))
                self.channel.basic_publish(message, exchange=exchange, routing_key=event.type)
                self._last_tag += 1
                self._pending[self._last_tag] = event.id
        deadline = time.monotonic() + timeout
        try:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout(f"the broker confirmed {len(self._confirmed)} of {len(events)} events "
                                         f"within {timeout:g}s")
                self.connection.drain_events(timeout=left)
        finally:
            self._pending.clear()  # what is still unconfirmed is sent again, with the same ids
        if self._refused:
            raise MessageNacked(f"the broker refused {len(self._refused)} of {len(events)} events")
        return self._confirmed

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass


def _event(body, message, seq: int | None = None) -> Event:
    """The event a message carries. Its source is the publisher that sent the message (the
    message's `app_id`, set from the transport's `source`), "unknown" without one; the body keeps
    what the publisher wrote in the event. The broker stamps no receive time: `time` is the publisher's."""
    event = Event.from_dict(body)
    source = message.properties.get("app_id") or UNKNOWN_SOURCE
    headers = message.headers or {}
    return replace(event, source=source, seq=seq if seq is not None else event.seq,
                   # the trace context as the message's headers carry it (any AMQP tool reads them there)
                   traceparent=headers.get(TRACEPARENT, event.traceparent),
                   tracestate=headers.get(TRACESTATE, event.tracestate))


def _decode_log(fetched: list[Event] | list[tuple[int, bytes, str | None]]) -> list[Event]:
    return [entry if isinstance(entry, Event) else _logged_event(*entry) for entry in fetched]


def _logged_event(offset: int, body: bytes, publisher: str | None) -> Event:
    """An event read from the stream at `offset`, made in one go (a rebuild makes thousands a second):
    its source and position put in; its trace context is the envelope's. Not validated again: only
    this transport's `publish` writes to the stream, with events the services validated."""
    raw = orjson.loads(body)
    if isinstance(raw, dict):
        raw["source"], raw["seq"] = publisher or UNKNOWN_SOURCE, offset + 1
    return Event.logged(raw)


def _raw_event(message) -> Event:
    """The event a kombu message carries, its body parsed here (orjson) rather than by kombu's JSON
    decoder; InvalidEvent when the body is not an event."""
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"the message is not JSON: {exc}") from None
    return _event(body, message)


class _QueueConsumer(ConsumerMixin):
    """One service's queue: apply what arrived as one batch, then acknowledge it; reconnect when the broker goes."""

    def __init__(self, name: str, connection: Connection, queue: Queue, consumer: EventConsumer) -> None:
        self.name = name
        self.connection = connection
        self.queue = queue
        self.consumer = consumer
        self.last_error: str | None = None
        self._applied = RecentIds()  # a republished event (its confirm was lost) is skipped, not applied again
        self._failures = 0  # in a row, for the retry policy's growing wait
        self._batch: dict[str, tuple[Event, object]] = {}  # received, not yet applied: event id -> (event, message)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def declare(self) -> None:
        """Create the queue and its bindings now, so no event published from here on is missed."""
        with self.connection.channel() as channel:
            self.queue(channel).declare()

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        return [Consumer(queues=[self.queue], on_message=self.on_message, accept=["json"], prefetch_count=PREFETCH)]

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

    def on_message(self, message) -> None:
        """Take one message into the batch being gathered (applied and acknowledged by `_apply_batch`)."""
        try:
            event = _raw_event(message)
        except InvalidEvent as exc:
            log.error("dropping an invalid event from %s: %s", self.queue.name, exc)
            message.reject(requeue=False)
            return
        if event.id in self._applied or event.id in self._batch:
            message.ack()
            return
        self._batch[event.id] = (event, message)

    def consume(self, limit=None, timeout=None, safety_interval=1, **kwargs):  # noqa: ARG002 - kombu's signature
        """kombu's loop, but applying what the broker has already sent as one batch: one transaction
        (and, for a durable store, one fsync) for up to PREFETCH events, not one each."""
        with self.consumer_context(**kwargs) as (conn, channel, consumers):
            while not self.should_stop:
                try:
                    conn.drain_events(timeout=safety_interval)
                    while len(self._batch) < PREFETCH:  # what is already here joins the batch; nothing is awaited
                        conn.drain_events(timeout=0)
                except socket.timeout:
                    conn.heartbeat_check()
                except OSError:
                    if not self.should_stop:
                        raise
                self._apply_batch()
                yield

    def on_connection_revived(self) -> None:
        self._batch.clear()  # received on the lost channel: the broker delivers them again

    def _apply_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch = list(self._batch.values()), {}
        try:
            self.consumer([event for event, _ in batch])
        except Exception as exc:  # noqa: BLE001 - any failure: leave them for a later try
            self.last_error = str(exc)
            self._failures += 1
            log.warning("could not apply %d events, requeued: %s", len(batch), exc)
            for _, message in batch:
                message.requeue()
            self._stopping.wait(POLICY.delay(self._failures))  # the store is failing: do not spin on them
            return
        self._failures = 0
        for event, _ in batch:
            self._applied.add(event.id)
        # One acknowledgement for the whole batch: every delivery up to the last one's tag (what this
        # consumer skipped or rejected on the way was settled already).
        batch[-1][1].ack(multiple=True)

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

