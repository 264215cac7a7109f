"""The transport seam: how a service hands events on, how events reach its handlers, and what
anyone may ask a transport about itself.

Two small protocols: `Transport` (publish, read the log, consume) is what the services use;
`Inspection` (describe, backlog, read the log, reset) is what blogctl, the tests and the bench
use. Every transport implements both. Which one runs is chosen by the scheme of
`BLOG_BROKER_URL` in `REGISTRY`; unset, it is the home-made HTTP bus at the bus's address.
Handlers never know which transport carried their events, and nothing outside this package
needs to know either.

Adding a transport: one module in this package with a class that implements both protocols and
a `from_url(url, config, source)` constructor, and one line in `REGISTRY`.
"""
from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..events import Event

# A service's entry point for events: it applies them and returns, or raises to be retried.
Consumer = Callable[[list[Event]], None]

# What the log names as an event's source when its publisher did not say who it is.
UNKNOWN_SOURCE = "unknown"


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


class Transport(Protocol):
    """What a service does with events."""

    between_processes: bool  # whether services in processes of their own meet through it (a class attribute)

    def publish(self, events: Sequence[Event]) -> None:
        """Return once the transport has durably accepted every event, else raise TransportError."""

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """Up to `limit` logged events with a sequence number above `after`, oldest first."""

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",)) -> None:
        """Begin delivering events of `types` (default: all) for consumer `name` into `consumer`."""

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


from .memory import InMemoryBus  # noqa: E402 - the test double, importable from the seam itself

__all__ = [
    "REGISTRY", "UNKNOWN_SOURCE", "Consumer", "RecentIds", "Description", "InMemoryBus", "Inspection", "Transport",
    "TransportError", "from_config", "joins_processes", "kind", "printable", "transport_class", "url_of",
]
