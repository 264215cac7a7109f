"""The transport seam: how a service hands events to the bus and how events reach its handlers.

Three implementations are in view: `HttpTransport` (the bus at :4005 pushes to each
service's `POST /events`), `InMemoryBus` (synchronous, the test double) and a broker.
Handlers never know which one carried their events.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import orjson

from . import signing
from .events import Event
from .http import HttpClient, Unreachable

# A service's entry point for events: it applies them and returns, or raises to be retried.
Consumer = Callable[[list[Event]], None]


class TransportError(Exception):
    """The bus could not be reached or refused the events; the caller retries later."""


class Transport(Protocol):
    def publish(self, events: Sequence[Event]) -> None:
        """Return once the bus has durably accepted every event, else raise TransportError."""

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """Up to `limit` logged events with a sequence number above `after`, oldest first."""

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",)) -> None:
        """Begin delivering events of `types` (default: all) for subscriber `name` into `consumer`."""

    def close(self) -> None:
        """Release connections; stop consuming."""


class HttpTransport:
    """The home-made bus over HTTP. Delivery is pushed by the bus to the service's `POST /events`."""

    def __init__(
        self, bus_url: str, *, timeout: float = 5.0, source: str | None = None, secret: str | None = None
    ) -> None:
        self.bus_url = bus_url.rstrip("/")
        self.secret = secret
        self.source = source
        self._http = HttpClient(timeout=timeout)  # keep-alive, shared by the relay and catch-up threads

    def publish(self, events: Sequence[Event]) -> None:
        body = orjson.dumps([event.to_dict() for event in events])
        try:
            response = self._http.post(f"{self.bus_url}/events", body, signing.headers(self.secret, body))
        except Unreachable as exc:
            raise TransportError(f"event bus not reachable at {self.bus_url}: {exc}") from None
        if response.status_code != 200:
            raise TransportError(f"event bus answered {response.status_code}: {response.text[:200]}")

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        try:
            response = self._http.get(f"{self.bus_url}/events", params={"after": after, "limit": limit})
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
            return [Event.from_dict(raw) for raw in response.json()]
        except (Unreachable, ValueError) as exc:
            raise TransportError(f"could not read the event log at {self.bus_url}: {exc}") from None

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",)) -> None:
        """Nothing to start: the bus delivers to the service's `POST /events` route."""

    def close(self) -> None:
        self._http.close()


class InMemoryBus:
    """A bus in one process that logs and delivers synchronously: the test double for the transport."""

    def __init__(self) -> None:
        self.log: list[Event] = []
        self._ids: set[str] = set()
        self._consumers: dict[str, Consumer] = {}
        self._lock = threading.RLock()
        self.down = False  # set True to make publishing fail, as a stopped bus would

    def transport(self, source: str | None = None) -> InMemoryTransport:
        return InMemoryTransport(self, source)

    def publish(self, events: Sequence[Event]) -> None:
        if self.down:
            raise TransportError("in-memory bus is down")
        with self._lock:
            fresh = []
            for event in events:
                if event.id in self._ids:
                    continue
                logged = Event(event.type, event.data, event.id, event.source, event.time, len(self.log) + 1)
                self.log.append(logged)
                self._ids.add(event.id)
                fresh.append(logged)
            consumers = list(self._consumers.values())
        for consumer in consumers:
            if fresh:
                consumer(fresh)

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        with self._lock:
            return self.log[after : after + limit]

    def subscribe(self, name: str, consumer: Consumer) -> None:
        with self._lock:
            self._consumers[name] = consumer


class InMemoryTransport:
    def __init__(self, bus: InMemoryBus, source: str | None = None) -> None:
        self.bus = bus
        self.source = source

    def publish(self, events: Sequence[Event]) -> None:
        self.bus.publish(events)

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        if self.bus.down:
            raise TransportError("in-memory bus is down")
        return self.bus.read_log(after, limit)

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",)) -> None:
        self.bus.subscribe(name, consumer)

    def close(self) -> None:
        pass


def from_config(config, source: str) -> Transport:
    """The transport the configuration names: RabbitMQ when BLOG_BROKER_URL is set, else the HTTP bus."""
    if config.broker_url:
        from .rabbitmq import RabbitTransport  # kombu is needed only in this mode

        return RabbitTransport(config.broker_url, source=source, namespace=config.broker_namespace)
    return HttpTransport(config.url("bus"), source=source, secret=config.secret)
