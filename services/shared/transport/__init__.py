"""The transport seam: how a service hands events on, how events reach its handlers, and what
anyone may ask a transport about itself.

Two small protocols: `Transport` (publish, read the log, consume) is what the services use;
`Inspection` (describe, backlog, read the log page by page, dead letters, reset) is what blogctl,
the tests and the bench use (docs/transports.md says what each answers). Every transport
implements both. Which one runs is chosen by the scheme of `BLOG_BROKER_URL` in `REGISTRY`;
unset, it is the home-made HTTP bus at the bus's address. Handlers never know which transport
carried their events, and nothing outside this package needs to know either: it asks the
transport's description.

Adding a transport: one module in this package with a class that implements both protocols and
a `from_url(url, config, source)` constructor, one line in `REGISTRY`, and its harness in the
contract tests.
"""
from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from ..events import Event

R = TypeVar("R")  # what a transport's fetch of a page of its log gives its decode

# A service's entry point for events: it applies them and returns, or raises to be retried.
Consumer = Callable[[list[Event]], None]

# What the log names as an event's source when its publisher did not say who it is.
UNKNOWN_SOURCE = "unknown"

PAGE = 1000  # events per read when the log is read page by page


class RecentIds:
    """The last `size` event ids seen, oldest forgotten first: what a transport remembers to send
    or apply an event once when a batch is retried."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)


class TransportError(Exception):
    """The transport could not be reached or refused the request; the caller retries later."""


class RedeliveryRefused(Exception):
    """A dead letter sent again was refused again by its subscriber: it stays a dead letter."""


class Transport(Protocol):
    """What a service does with events."""

    between_processes: bool  # whether services in processes of their own meet through it (a class attribute)

    def publish(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        """Return once the transport has durably accepted every event, else raise TransportError
        (also when no answer came within `timeout` seconds; None: the transport's own timeout)."""

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """Up to `limit` logged events with a sequence number above `after`, oldest first."""

    def iter_log(self, after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
        """The log after `after` to its end, one page of up to `page` events at a time, oldest first
        (each page read when asked for: `log_pages`, or fetched ahead: `read_ahead`); raises TransportError as `read_log` does."""

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",), *,
                        position: Callable[[], int | None] | None = None) -> None:
        """Begin delivering events of `types` (default: all) for consumer `name` into `consumer`; a
        transport that pushes to the service's own `POST /events` route instead has nothing to start
        (its description says whether a consumer gets only `types`: `filters_by_type`). `position`:
        the consumer's own position in the log, from which a transport that can stream its log to
        it does so (the HTTP bus), once it is given (None: the consumer is still catching up, ask
        again); others ignore it."""

    def close(self) -> None:
        """Release connections; stop consuming."""


@dataclass(frozen=True)
class Description:
    """What a transport says about itself, for people and for the tools that run the formation."""

    kind: str  # "http", "rabbitmq", "memory": what `/health` and `blogctl status` name as the transport
    name: str  # what a person calls it: "the HTTP bus", "RabbitMQ"
    url: str  # where it is, safe to print (no password)
    process: str | None  # the formation's extra process it needs (the bus), or None
    log: str  # what its log is called: "the bus log", "stream blog.log"
    backlog_of: str  # what `backlog()` lists: "subscribers" (cursor and lag each) or "queues" (messages ready)
    dead_letters: bool  # whether it parks an event a consumer keeps rejecting (else it retries it in place)
    filters_by_type: bool  # whether a consumer is handed only the types it subscribed to (else every event)
    publish_url: str | None = None  # where one event can be POSTed as JSON, unsigned, by any HTTP client (or None)


class Inspection(Protocol):
    """What a tool may ask of any transport."""

    def describe(self) -> Description:
        """What it is; answered without a network round trip."""

    def backlog(self) -> list[dict[str, Any]]:
        """Per consumer, what is still waiting for it: each dict has `name` and `waiting` (None:
        unknown) plus the transport's own detail (a subscriber's cursor and last error, a queue's
        consumers). Raises TransportError when the transport does not answer."""

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """As `Transport.read_log`."""

    def iter_log(self, after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
        """As `Transport.iter_log`."""

    def dead_letters(self, subscriber: str | None = None) -> list[dict[str, Any]]:
        """The events parked after a subscriber (or `subscriber` alone) kept rejecting them: each dict
        has `subscriber`, `seq`, `attempts`, `error`, `parked_at` and `event`. Always empty on a
        transport whose description says `dead_letters=False`. LookupError: no such subscriber."""

    def redeliver(self, subscriber: str, seq: int) -> None:
        """Send dead letter `seq` to `subscriber` again; it leaves the dead letters only if taken.
        LookupError: no such dead letter (always, on a transport that parks none); RedeliveryRefused:
        the subscriber refused it again."""

    def reset(self) -> None:
        """Delete everything this transport holds under its namespace (tests and the bench clean up with it)."""


# The transports, by the scheme of BLOG_BROKER_URL: "module:class", imported on first use (so a
# broker's client library is loaded only when that broker is named).
REGISTRY: dict[str, str] = {
    "http": "services.shared.transport.bus:HttpTransport",
    "https": "services.shared.transport.bus:HttpTransport",
    "amqp": "services.shared.transport.rabbitmq:RabbitTransport",
    "amqps": "services.shared.transport.rabbitmq:RabbitTransport",
    "memory": "services.shared.transport.memory:InMemoryTransport",
}


def log_pages(read_log: Callable[..., list[Event]], after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
    """`Inspection.iter_log` over a transport's `read_log`: pages until one comes back short."""
    while True:
        events = read_log(after=after, limit=page)
        if events:
            yield events
            after = events[-1].seq
        if len(events) < page:
            return


def read_ahead(fetch: Callable[[int, int], R], decode: Callable[[R, int, int], list[Event]], after: int = 0,
               page: int = PAGE) -> Iterator[list[Event]]:
    """`log_pages` for a transport whose read is a fetch (the network, the broker) then a decode: the
    next page is fetched in a thread of its own while the caller applies this one.

    Only the fetch goes to that thread, which then mostly waits on its socket without the GIL.
    The decode stays in the caller's thread: decoding in the fetching thread, beside a caller
    writing to SQLite (which lets the GIL go and takes it back for every row), made the two take
    turns and cut a rebuild's rate by a third (measured: docs/performance-redesign.md)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as fetcher:
        fetched = fetcher.submit(fetch, after, page)
        while True:
            events = decode(fetched.result(), after, page)
            if len(events) == page:
                after = events[-1].seq
                fetched = fetcher.submit(fetch, after, page)
            if events:
                yield events
            if len(events) < page:
                return


class ParksNone:
    """The dead-letter half of `Inspection` for a transport that parks nothing (it retries in place)."""

    def dead_letters(self, subscriber: str | None = None) -> list[dict[str, Any]]:
        return []

    def redeliver(self, subscriber: str, seq: int) -> None:
        raise LookupError(f"no dead letter {seq} for {subscriber}: {self.describe().name} parks none")


def url_of(config) -> str:
    """The transport's URL: BLOG_BROKER_URL, or the formation's own bus when it is unset."""
    return config.broker_url or config.url("bus")


def printable(url: str) -> str:
    """`url` (or a cluster's `;`-separated addresses) with each password shown as `***`: safe to print and log."""
    shown = []
    for address in url.split(";"):
        parts = urlsplit(address)
        if parts.password:
            parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
        shown.append(parts.geturl())
    return ";".join(shown)


def transport_class(url: str) -> type:
    scheme = urlsplit(url).scheme.lower()
    try:
        module, _, name = REGISTRY[scheme].partition(":")
    except KeyError:
        known = ", ".join(f"{s}://" for s in REGISTRY)
        raise ValueError(f"no transport for {scheme or 'a URL without a scheme'}:// (known: {known})") from None
    return getattr(importlib.import_module(module), name)


def from_config(config, source: str | None = None) -> Any:
    """The transport the configuration names, for the publisher or consumer `source` (a service
    name; None for a tool that only inspects). Implements `Transport` and `Inspection`."""
    url = url_of(config)
    return transport_class(url).from_url(url, config, source)


def joins_processes(config) -> bool:
    """Whether the transport the configuration names can carry events between a formation's processes."""
    return transport_class(url_of(config)).between_processes


def kind(config) -> str:
    """Which kind of transport the configuration names ("http", "rabbitmq", ...), without connecting."""
    return transport_class(url_of(config)).kind


def messaging_system(config) -> str:
    """What a trace's `messaging.system` says for the transport the configuration names (semantic
    conventions name the brokers; ours are ours), without connecting."""
    return transport_class(url_of(config)).messaging_system


from .memory import InMemoryBus  # noqa: E402 - the test double, importable from the seam itself

__all__ = [
    "PAGE", "REGISTRY", "UNKNOWN_SOURCE", "Consumer", "RecentIds", "Description", "InMemoryBus", "Inspection",
    "ParksNone", "RedeliveryRefused", "Transport", "TransportError", "from_config", "joins_processes", "kind",
    "log_pages", "messaging_system", "printable", "transport_class", "url_of",
]
