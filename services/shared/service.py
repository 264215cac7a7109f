"""A service is one declaration (`Service`), built into its Flask app by the one assembler (`build_service`).

A service's package holds its store, its handlers and its routes, and declares them once:

    SERVICE = Service("posts", 4000, title="Posts service", schema=SCHEMA, store=open_store,
                      emits=(PostCreated,), routes=routes, health=health, browser=True)

What it consumes is its handler table's keys (event classes); the bus's subscribers, the
broker's queue bindings, blogctl's service list and the Procfile check read the service table
(services/table.py), the list of these declarations. `build_service` wires every service in the
same order; nothing here knows a service by name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from flask import Flask, Response, after_this_request
from pydantic import BaseModel

from . import outbox
from . import transport as transport_module
from .components import Closing, components
from .config import Config
from .consumer import register_consumer
from .db import Database
from .postgres import writer_database
from .events import EventData, Handlers
from .metrics import metrics_of
from .openapi import EVENTS_IN, Operation, register_openapi
from .transport import Transport
from .web import allow_origins, create_base_app, events_blueprint, register_health

S = TypeVar("S")  # the service's store


@dataclass(frozen=True)
class Built(Generic[S]):
    """What a service's routes work with: its settings, its store and its relay, once built."""

    config: Config
    me: str  # this process's name: the service, or the replica of it this process runs ("query.2")
    store: S
    relay: outbox.Relay | None  # None: the service emits nothing
    settings: Any = None  # its own settings model's values (None: it declares none)

    def notify(self) -> None:
        """A request has written to the outbox: wake the relay thread, or publish from this request
        (BLOG_PUBLISH_INLINE: before it answers, or once its answer is sent; `Relay.publish_now`)."""
        if self.relay is None:
            return
        if self.config.publish_inline == "before-answer":
            self.relay.publish_now()
        elif self.config.publish_inline == "after-answer":
            after_this_request(_publish_once_sent(self.relay))
        else:
            self.relay.notify()


# Registers a service's own routes on its app and returns the operations its OpenAPI document lists.
Routes = Callable[[Flask, Built[S]], list[Operation]]


@dataclass(frozen=True)
class FrontRoute:
    """A path the front door (blogctl/gateway.py, deploy/k8s/ingress-srv.yaml) sends to this service.

    `location` is an nginx location: `= /exact`, `~ regex` or a `/prefix`. `methods`: only these
    methods (None: every method another service's route at the same location does not take).
    `ingress`: the course's ingress path for it (an ingress cannot route by method, so a route
    limited to some methods has none).
    """

    location: str
    methods: tuple[str, ...] | None = None
    ingress: str | None = None

    @property
    def precedence(self) -> int:
        """nginx's order of trial: exact locations, then regular expressions, then prefixes."""
        return 0 if self.location.startswith("= ") else 1 if self.location.startswith("~") else 2


def _no_fields(store: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Service(Generic[S]):
    """One service of the formation: everything the assembler, the table's readers and the tests need."""

    name: str
    port: int  # its default port; BLOG_<NAME>_PORT overrides it
    title: str  # its OpenAPI document's title
    schema: str  # its SQLite schema
    store: Callable[[Database, Config], S]  # opens its store on its database
    handlers: Handlers[Any] = field(default_factory=dict)  # event class -> handler; the store applies them
    emits: tuple[type[EventData], ...] = ()  # what it publishes through its outbox
    routes: Routes[S] | None = None
    health: Callable[[S], dict[str, Any]] = _no_fields  # its own `/health` fields
    settings: type[BaseModel] | None = None  # its own settings, each field a BLOG_<NAME>_<FIELD> variable
    browser: bool = False  # called from the blog page: CORS lets the page's origins in
    page: bool = False  # serves the blog page (its origins are the page's, for CORS)
    # may run as several processes (BLOG_REPLICAS), each consuming every event: it owns no data, its store is a
    # view. Not replicable: its replicas (a writer's, on PostgreSQL) consume as one group (`consumes_as_group`)
    replicable: bool = False
    # The bus delivers to it before the others, and it follows the log as one stream where the transport
    # offers one: its view is what readers wait for.
    delivered_first: bool = False
    bus: bool = False  # the home-made event bus itself: not run when a broker carries the events
    front_door: tuple[FrontRoute, ...] = ()  # the paths the gateway and the ingress send to it

    @property
    def consumes_as_group(self) -> bool:
        """Whether its processes take events as one consumer (one broker queue, one bus cursor; each event
        handled by one of them): they share one store (a writer's tables, which its replicas reach in
        PostgreSQL), so one position. A `replicable` service's replicas each keep a view of their own:
        each is a consumer of its own, and gets every event."""
        return not self.replicable

    def subscription(self, process: str) -> str:
        """The name its process `process` (itself, or a replica: `comments.2`) consumes under: its own
        name for every process when they consume as a group, else the process's."""
        return self.name if self.consumes_as_group else process

    @property
    def consumes(self) -> tuple[str, ...]:
        """The event types its handlers take (a broker's queue is bound to these)."""
        return tuple(data.__name__ for data in self.handlers)


def build_service(service: Service[S], config: Config, transport: Transport | None = None) -> Flask:
    """The app of `service`, always assembled in this order: the base app (JSON errors, metrics,
    tracing hooks), CORS, the transport, the store and its database upkeep (checkpoints), the consumer and its
    catch-up (if it has handlers), the outbox relay (if it emits), `/health`, its routes, OpenAPI.

    Only registers: its components start when the runner (services/shared/main.py) starts them.
    `transport`: the one to use (tests pass the in-memory bus's); default, the one `config` names.
    """
    me = config.me(service.name)
    app = create_base_app(service.name, config, import_name=service.routes.__module__ if service.routes else None)
    if service.browser:
        allow_origins(app, config)
    parts = components(app)
    if not service.bus:  # the bus is the transport
        transport = transport or transport_module.from_config(config, source=service.name)
        parts.add("transport", Closing(transport))
    if service.emits:  # a writer: its SQLite file, or its schema in PostgreSQL, which its replicas share
        db = writer_database(config, service.name, service.schema)
    else:  # a replicable service's store is a view rebuilt from the log if lost: no fsync on commit
        db = Database(config.db_path(me), service.schema, durable=config.fsync and not service.replicable)
    store = service.store(db, config)
    parts.add("database", db.upkeep())
    relay = outbox.Relay(db, transport, published=metrics_of(app).published) if service.emits else None
    wake = relay.notify if relay is not None else _nothing
    catch_up = (register_consumer(app, me, store, transport, service.consumes, then=wake,
                                  subscription=service.subscription(me), follow_log=service.delivered_first)
                if service.handlers else None)
    if not service.handlers and not service.bus:  # every delivery acknowledged, as the course's services do
        app.register_blueprint(events_blueprint(_ignore))
    if relay is not None:
        parts.add("relay", relay)  # tests drive it with relay.relay_once()

    def health() -> dict[str, Any]:
        fields = service.health(store)
        if relay is not None:
            fields.update(outbox_pending=outbox.pending(db), relay_error=relay.last_error)
        if catch_up is not None:
            fields.update(applied_seq=store.applied_seq, **catch_up.health())
        return fields

    register_health(app, service.name, health)
    built = Built(config, me, store, relay, config.settings.get(service.name))
    operations = service.routes(app, built) if service.routes else []
    register_openapi(app, service.title, operations if service.bus else [*operations, EVENTS_IN])
    return app


def _publish_once_sent(relay: outbox.Relay) -> Callable[[Response], Response]:
    def publish_once_sent(response: Response) -> Response:
        response.call_on_close(relay.publish_now)  # WSGI close: waitress has written the answer by then
        return response

    return publish_once_sent


def _nothing() -> None:
    pass


def _ignore(events: list) -> None:
    pass

