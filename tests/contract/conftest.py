"""One harness per transport, so the one contract test class runs against each.

- `memory`: an `InMemoryBus` in this process.
- `http`: the real bus app (`services/bus`) served by waitress on a free port in a thread, its
  subscribers routes of a small app served the same way, which hand what the bus pushes to the
  consumer a transport registered (`HttpTransport.receiver`).
- `rabbitmq`: the broker at BROKER_URL under a namespace of the test's own, reset afterwards;
  skipped, with the reason, when no broker answers.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator

import pytest
from flask import Flask, jsonify
from waitress.server import create_server

from services.bus.app import create_app as create_bus
from services.shared.components import components
from services.table import CONSUMERS, load
from services.shared.events import Event
from services.shared.transport import InMemoryBus
from services.shared.transport.bus import HttpTransport
from services.shared.web import ApiError, create_base_app, parse_events
from tests.helpers import BROKER_URL, broker_missing, free_port

# The consumers a contract test may start: the table's (the bus must know its subscribers when
# it starts, and a broker's backlog lists the table's consumers' queues).
NAMES = CONSUMERS[:2]


class Received:
    """What one consumer was handed, in order; it can be told to fail the next `fail` deliveries."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail = 0
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, events: list[Event]) -> None:
        with self._lock:
            if self.fail:
                self.fail -= 1
                self.refused += 1
                raise RuntimeError("refused on purpose")
            self.events.extend(events)

    def ids(self) -> list[str]:
        with self._lock:
            return [e.id for e in self.events]

    def has(self, ids: Iterable[str]) -> bool:
        return set(ids) <= set(self.ids())


class Harness:
    """Makes transports on one carrier and consumers on them; closes every transport it made."""

    def __init__(self) -> None:
        self.opened: list = []

    def make(self, source: str | None):
        raise NotImplementedError

    def transport(self, source: str | None = None):
        made = self.make(source)
        self.opened.append(made)
        return made

    def consume(self, name: str, types: Iterable[str] = ("#",)) -> tuple[Received, object]:
        assert name in NAMES
        received, transport = Received(), self.transport(name)
        transport.start_consuming(name, received, types=tuple(types))
        return received, transport

    def unreachable(self):
        """A transport of this kind whose other end is not there."""
        raise NotImplementedError

    def close(self) -> None:
        for transport in self.opened:
            transport.close()


class MemoryHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self.bus = InMemoryBus()

    def make(self, source):
        return self.bus.transport(source)

    def unreachable(self):
        return InMemoryBus(down=True).transport()


def serve(app: Flask) -> tuple[int, callable]:
    """Serve `app` with waitress on a free loopback port in a thread; returns the port and a stop."""
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress-test", daemon=True)
    thread.start()

    def stop() -> None:
        # Closed from inside the server's own loop (its trigger runs the call there): closing the
        # listening socket from here would pull it from under the loop's select() (EBADF).
        server.trigger.pull_trigger(lambda: [channel.close() for channel in list(server._map.values())])
        thread.join(5)
        server.task_dispatcher.shutdown()

    return server.effective_port, stop


class HttpHarness(Harness):
    def __init__(self, data_dir) -> None:
        super().__init__()
        self.consumers: dict[str, HttpTransport] = {}
        subscribers_app = create_base_app("subscribers", load({"BLOG_DATA_DIR": str(data_dir)}))

        @subscribers_app.post("/events/<name>")
        def receive(name: str):
            try:
                consumer = self.consumers[name].receiver(name)
            except KeyError:
                raise ApiError(503, f"nothing consumes as {name} now") from None
            consumer(parse_events())
            return jsonify({})

        subscribers_port, self._stop_subscribers = serve(subscribers_app)
        self.config = load({
            "BLOG_DATA_DIR": str(data_dir), "BLOG_BUS_PORT": str(free_port()), "BLOG_DELIVERY_ATTEMPTS": "1000",
            "BLOG_SUBSCRIBERS": ",".join(f"{n}=http://127.0.0.1:{subscribers_port}/events/{n}" for n in NAMES),
        })
        bus = create_bus(self.config)
        self.delivery = components(bus)["delivery"]
        self.delivery.start()
        port, self._stop_bus = serve(bus)
        self.url = f"http://127.0.0.1:{port}"

    def make(self, source):
        return HttpTransport(self.url, source=source)

    def unreachable(self):
        return HttpTransport(f"http://127.0.0.1:{free_port()}", timeout=1)

    def consume(self, name, types=("#",)):
        received, transport = super().consume(name, types)
        self.consumers[name] = transport
        return received, transport

    def close(self) -> None:
        super().close()
        self.delivery.stop()
        self._stop_bus()
        self._stop_subscribers()


class RabbitHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self.namespace = f"contract-{uuid.uuid4().hex[:10]}"

    def make(self, source):
        from services.shared.transport.rabbitmq import RabbitTransport

        return RabbitTransport(BROKER_URL, source=source, namespace=self.namespace)

    def unreachable(self):
        from services.shared.transport.rabbitmq import RabbitTransport

        return RabbitTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}//", namespace=self.namespace, timeout=1)

    def close(self) -> None:
        super().close()
        self.make(None).reset()


@pytest.fixture(params=["memory", "http", pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.slow])])
def carrier(request, tmp_path) -> Iterator[Harness]:
    if request.param == "rabbitmq" and (reason := broker_missing()):
        pytest.skip(reason)
    harness = {"memory": MemoryHarness, "http": lambda: HttpHarness(tmp_path),
               "rabbitmq": RabbitHarness}[request.param]()
    try:
        yield harness
    finally:
        harness.close()
