"""The in-memory transport: a bus in one process that logs and delivers synchronously, the test double.

It keeps the guarantees of the real ones: each event logged once (by id), a sequence number per
event, each consumer gets only the types it asked for, in log order, from its own cursor; a
consumer that raises keeps its cursor and gets the same events again at the next delivery.
Consumers started under one name are a group with one cursor: each batch goes to one of them
(the first that takes it), as a broker's queue shared by competing consumers does.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..events import Event, utc_now
from . import PAGE, UNKNOWN_SOURCE, Consumer, Description, ParksNone, TransportError, log_pages

ALL = "#"


@dataclass
class _Subscription:
    # The group's members, the first that takes a batch takes it; none: detached (their transports
    # closed), and events wait for them, as in a durable queue.
    members: list[Consumer]
    types: frozenset[str]
    cursor: int = 0  # the seq up to which it has taken every event
    failures: int = 0
    last_error: str | None = None

    def wants(self, event: Event) -> bool:
        return ALL in self.types or event.type in self.types


@dataclass
class InMemoryBus:
    name: str = "default"
    log: list[Event] = field(default_factory=list)
    down: bool = False  # set True to make publishing and reading fail, as a stopped bus would

    def __post_init__(self) -> None:
        self._ids: set[str] = set()
        self._subscriptions: dict[str, _Subscription] = {}
        self._lock = threading.RLock()

    @classmethod
    def named(cls, name: str) -> InMemoryBus:
        """The process's one bus called `name` (what `memory://NAME` reaches)."""
        with _NAMED_LOCK:
            return _NAMED.setdefault(name, cls(name))

    def transport(self, source: str | None = None) -> InMemoryTransport:
        return InMemoryTransport(self, source)

    def publish(self, events: Sequence[Event], source: str | None = None) -> None:
        """Log each event not seen before (stamped as the bus stamps it: who published, when), then deliver."""
        if self.down:
            raise TransportError("in-memory bus is down")
        with self._lock:
            for event in events:
                if event.id in self._ids:
                    continue
                self.log.append(replace(event, source=source or UNKNOWN_SOURCE, time=utc_now(),
                                        seq=len(self.log) + 1))
                self._ids.add(event.id)
            self.deliver()

    def deliver(self) -> None:
        """Hand every consumer what it has not taken yet; one that raises gets it again next time."""
        with self._lock:
            for subscription in self._subscriptions.values():
                if not subscription.members:
                    continue
                end = len(self.log)
                batch = [e for e in self.log[subscription.cursor:end] if subscription.wants(e)]
                if batch and not self._hand(subscription, batch):
                    continue
                subscription.cursor = max(subscription.cursor, end)
                subscription.failures, subscription.last_error = 0, None

    @staticmethod
    def _hand(subscription: _Subscription, batch: list[Event]) -> bool:
        """Give `batch` to the first member that takes it; False when every one raised (it is redelivered)."""
        for member in list(subscription.members):
            try:
                member(batch)
                return True
            except Exception as exc:  # noqa: BLE001 - a consumer's failure is its own; another member may take it
                subscription.failures += 1
                subscription.last_error = str(exc)
        return False

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        if self.down:
            raise TransportError("in-memory bus is down")
        with self._lock:
            return self.log[after : after + limit]

    def subscribe(self, name: str, consumer: Consumer, types: Iterable[str] = (ALL,)) -> None:
        """Deliver events of `types` to `consumer`: a new name from the log's current end, a known
        one from where it stopped (as a durable queue or the bus's cursor would); while another
        consumer is attached under the name, the two are a group sharing its cursor."""
        with self._lock:
            known = self._subscriptions.get(name)
            if known is None:
                self._subscriptions[name] = _Subscription([consumer], frozenset(types), cursor=len(self.log))
            else:
                known.members.append(consumer)
                known.types = frozenset(types)
            self.deliver()  # whatever waited for a known name

    def detach(self, name: str, consumer: Consumer | None = None) -> None:
        """Stop delivering to `consumer` under `name` (None: to all); what no member has taken waits (its backlog)."""
        with self._lock:
            if name in self._subscriptions:
                members = self._subscriptions[name].members
                members[:] = [m for m in members if consumer is not None and m is not consumer]

    def backlog(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(name=name, waiting=sum(s.wants(e) for e in self.log[s.cursor:]), cursor=s.cursor,
                     lag=len(self.log) - s.cursor, failures=s.failures, last_error=s.last_error)
                for name, s in self._subscriptions.items()
            ]

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self._ids.clear()
            self._subscriptions.clear()


_NAMED: dict[str, InMemoryBus] = {}
_NAMED_LOCK = threading.Lock()


class InMemoryTransport(ParksNone):
    kind = "memory"
    messaging_system = "blogctl_memory"  # what a trace's `messaging.system` says
    between_processes = False

    def __init__(self, bus: InMemoryBus, source: str | None = None) -> None:
        self.bus = bus
        self.source = source  # the publisher, as the log names it
        self._consuming: list[tuple[str, Consumer]] = []

    @classmethod
    def from_url(cls, url: str, config: Any = None, source: str | None = None) -> InMemoryTransport:
        return cls(InMemoryBus.named(urlsplit(url).netloc or "default"), source)

    def publish(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        self.bus.publish(events, source=self.source)

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        return self.bus.read_log(after, limit)

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = (ALL,), *,
                        position: Callable[[], int | None] | None = None) -> None:  # delivered at once: no stream to follow
        self._consuming.append((name, consumer))
        self.bus.subscribe(name, consumer, types)

    def close(self) -> None:
        for name, consumer in self._consuming:
            self.bus.detach(name, consumer)

    def describe(self) -> Description:
        return Description(
            kind=self.kind, name="the in-memory bus", url=f"memory://{self.bus.name}", process=None,
            log="the in-memory log", backlog_of="subscribers", dead_letters=False, filters_by_type=True,
        )

    def iter_log(self, after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
        return log_pages(self.read_log, after, page)

    def backlog(self) -> list[dict[str, Any]]:
        if self.bus.down:
            raise TransportError("in-memory bus is down")
        return self.bus.backlog()

    def reset(self) -> None:
        self.bus.reset()
