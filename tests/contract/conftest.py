"""One harness per transport, so the one contract test class runs against each.

- `memory`: an `InMemoryBus` in this process.
- `http`: the real bus app (`services/bus`) served by waitress on a free port in a thread; each
  consumer is a small app with the `POST /events` route every service has (`web.events_blueprint`),
  served the same way on the port the bus delivers to while the consumer runs, and stopped when
  its transport is closed (a service that is down), so the bus pushes to it as in production.
  Each name is a group of two members (two ports): a second consumer under a name is the other.
- `rabbitmq`: the broker at BROKER_URL under a namespace of the test's own, reset afterwards;
  skipped, with the reason, when no broker answers.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator

import pytest
from flask import Flask
from waitress.server import create_server

from services.bus.app import create_app as create_bus
from services.shared.components import components
from services.table import CONSUMERS, load
from services.shared.events import Event
from services.shared.transport import InMemoryBus
from services.shared.transport.bus import HttpTransport
from services.shared.web import create_base_app, events_blueprint
from tests.helpers import BROKER_URL, broker_missing, free_port

# The consumers a contract test may start: the table's (the bus must know its subscribers when
# it starts, and a broker's backlog lists the table's consumers' queues).
NAMES = CONSUMERS[:2]
ATTEMPTS = 3  # refusals of an event before the HTTP bus parks it (a consumer that is away is not refusing)


class Received:
    """What one consumer was handed, in order; it can be told to fail the next `fail` deliveries, and
    to refuse every delivery holding an event whose id is in `poison`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail = 0
        self.refused = 0
        self.poison: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, events: list[Event]) -> None:
        with self._lock:
            if self.fail or self.poison & {e.id for e in events}:
                self.fail = max(0, self.fail - 1)
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
        """A consumer under `name`; a second one while the first runs joins it as a group (replicas
        sharing one store do, `Config.subscription`)."""
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


def serve(app: Flask, port: int = 0) -> tuple[int, callable]:
    """Serve `app` with waitress on loopback `port` (0: a free one) in a thread; returns the port and a stop."""
    server = create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, name="waitress-test", daemon=True)
    thread.start()

    def stop() -> None:
        if not thread.is_alive():
            return  # stopped already
        # Closed from inside the server's own loop (its trigger runs the call there): closing the
        # listening socket from here would pull it from under the loop's select() (EBADF).
        try:
            server.trigger.pull_trigger(lambda: [channel.close() for channel in list(server._map.values())])
        except OSError:  # its loop closed the trigger already: the server is stopping on its own
            pass
        thread.join(5)
        server.task_dispatcher.shutdown()

    return server.effective_port, stop


class HttpHarness(Harness):
    def __init__(self, data_dir) -> None:
        super().__init__()
        # Where the bus delivers to each consumer: two members each, a name given twice being a group.
        self.ports = {name: [free_port(), free_port()] for name in NAMES}
        self.serving: set[int] = set()
        self.config = load({
            "BLOG_DATA_DIR": str(data_dir), "BLOG_BUS_PORT": str(free_port()), "BLOG_DELIVERY_ATTEMPTS": str(ATTEMPTS),
            "BLOG_SUBSCRIBERS": ",".join(f"{n}=http://127.0.0.1:{port}/events"
                                         for n, ports in self.ports.items() for port in ports),
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
        """The consumer as a service runs it: its transport told to consume, its `POST /events` route
        served where the bus delivers; closing the transport takes the route down."""
        received, transport = super().consume(name, types)
        app = create_base_app(name, self.config)
        app.register_blueprint(events_blueprint(received))
        port = next(port for port in self.ports[name] if port not in self.serving)  # the group's next member
        self.serving.add(port)
        _, stop = serve(app, port)
        close = transport.close
        transport.close = lambda: (stop(), self.serving.discard(port), close())
        return received, transport

    def close(self) -> None:
        super().close()
        self.delivery.stop()
        self._stop_bus()


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
