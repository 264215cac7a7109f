"""Where every service and the CLI learn ports, addresses and the data directory.

The settings only: each value has a default and a `BLOG_*` environment variable that overrides
it. Which services exist is the service table (`services/table.py`), handed to `load()`: the
defaults of ports and subscribers, which service may run as replicas, and each service's own
settings model (`BLOG_<SERVICE>_<FIELD>`) come from the services' declarations.
`load()` is the one read of the environment.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ValidationError

from . import transport as transport_module
from .events import describe

if TYPE_CHECKING:
    from .service import Service


def service_of(instance: str) -> str:
    """`query.2` -> `query`: the service a replica runs (a service's first process is named as it)."""
    return instance.partition(".")[0]


def host_variable(name: str) -> str:
    """The setting that says where a process of the formation runs: BLOG_POSTS_HOST, BLOG_QUERY_2_HOST."""
    return f"BLOG_{name.upper().replace('.', '_')}_HOST"


REPLICA_PORT_STEP = 100  # replica k of a service listens on its port + 100 x (k - 1), as honcho numbers them


# The course's React client runs from its dev server here: allowed by default, as the course's `cors()` allows it.
COURSE_CLIENT_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")


class ConfigError(ValueError):
    """A BLOG_* setting holds a value the system cannot use."""


@dataclass(frozen=True)
class Subscriber:
    """Who the HTTP bus delivers to: one cursor, at one address, or a group's (`also`: the other members'
    addresses; each batch goes to one member that takes it)."""

    name: str
    url: str
    batch: bool = False  # our own services take a JSON array per delivery; others get one event per POST
    also: tuple[str, ...] = ()  # a group's other members' addresses (the replicas of a service sharing one store)

    @property
    def members(self) -> tuple[str, ...]:
        return (self.url, *self.also)


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    # The service table this configuration was read for (services/table.py), in formation order.
    services: tuple[Service, ...] = ()
    ports: dict[str, int] = field(default_factory=dict)
    # Every process of the formation by name: the services, and replicas as `query.2`, `query.3`.
    instances: tuple[str, ...] = ()
    instance: str | None = None  # BLOG_INSTANCE: which replica this process is (None: the service itself)
    # BLOG_<SERVICE>_HOST (a replica's: BLOG_QUERY_2_HOST): where a process runs on another host
    # (default: this host). `host` is
    # what this process binds; these are what it calls.
    hosts: dict[str, str] = field(default_factory=dict)
    data_dir: Path = Path(".blog")
    subscribers: tuple[Subscriber, ...] = ()
    max_body_bytes: int = 64 * 1024
    secret: str | None = None  # BLOG_SECRET: sign and check every event sent over HTTP
    delivery_attempts: int = 10  # rejections of one event before the bus parks it as a dead letter
    delivery_timeout: float = 5.0  # seconds the bus waits for a subscriber's answer
    fsync: bool = True  # BLOG_FSYNC=0: answer a write once committed, without waiting for the disk
    # BLOG_PUBLISH_INLINE: who publishes a request's events (outbox.Relay.publish_now): "off", the relay
    # thread, woken; "before-answer", the request itself before it answers; "after-answer", the
    # request's thread once the answer is sent. The relay thread retries what either leaves.
    publish_inline: str = "off"
    idle_timeout: int = 10  # seconds a service keeps a silent connection (idle, or a request never finished)
    # BLOG_BROKER_URL: carry events through a broker instead of the HTTP bus, the transport chosen by
    # the URL's scheme. Several nodes of a cluster are tried in turn (kombu's failover form: "amqp://a//;amqp://b//").
    broker_url: str | None = None
    broker_namespace: str = "blog"  # prefix of the broker's exchange, stream and queues
    # BLOG_CORS_ORIGINS: the web origins allowed to call the services from a browser ("*": any);
    # None: the page's own origins and the course client's dev server (`cors_origins()`)
    cors: tuple[str, ...] | None = None
    # Each service's own settings (its declaration's `settings` model), by service name:
    # field `reject` of Moderation's is BLOG_MODERATION_REJECT.
    settings: dict[str, BaseModel] = field(default_factory=dict)
    # OTEL_SDK_DISABLED=true: no traces at all (services/shared/tracing.py)
    tracing: bool = True
    trace_rate: float = 20.0  # BLOG_TRACE_RATE: traces a service may start a second (every hop after follows)
    trace_sampler: str | None = None  # OTEL_TRACES_SAMPLER: the SDK's sampler instead of the rate (it reads _ARG too)
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT: also export to that collector
    log_format: str = "text"  # BLOG_LOG_FORMAT=json: one JSON object per log line, with trace and span ids
    # BLOG_ACCESS_LOG: which HTTP requests get a log line (services/shared/logs.py): "writes" (every request but a
    # read answered 2xx/3xx: a line costs a fifth of a cheap read's CPU), "all", or "off"
    access_log: str = "writes"
    # BLOG_GATEWAY=1 (`blogctl up --gateway`): nginx in front of the formation on BLOG_GATEWAY_PORT (blogctl/gateway.py)
    gateway: bool = False
    gateway_port: int = 4080
    # BLOG_DATABASE_URL=postgresql://...: Posts, Comments and Moderation keep their tables there, a schema
    # each, and may run as replicas; None: each in its SQLite file in the data directory
    database_url: str | None = None

    @property
    def transport(self) -> str:
        """Which kind of transport carries the events ("http", "rabbitmq", ...): the registry's answer."""
        return transport_module.kind(self)

    def url(self, service: str) -> str:
        """Base URL a client uses to reach `service` (0.0.0.0 binds are reached on loopback)."""
        return _url(self.host, self.hosts, self.ports, service)

    def service(self, name: str) -> Service:
        """The declaration of service `name` (or of the service replica `name` runs); KeyError for another name."""
        found = next((s for s in self.services if s.name == service_of(name)), None)
        if found is None:
            raise KeyError(name)
        return found

    def page_origins(self) -> list[str]:
        """The origins the blog page is served from (the address of the service that serves it), for CORS."""
        hosts = {"127.0.0.1", "localhost"}
        if self.host not in ("0.0.0.0", "", "::"):
            hosts.add(self.host)
        pages = [name for name in self.instances if self.service(name).page]
        return sorted(f"http://{host}:{self.ports[name]}" for host in hosts for name in pages)

    def me(self, service: str) -> str:
        """This process's name in the formation: `service`, or the replica of it it runs as."""
        return self.instance if self.instance and service_of(self.instance) == service else service

    def subscription(self, name: str) -> str:
        """The consumer process `name` takes events as: its service's one subscription, shared by its
        replicas, when they share one store (`Service.consumes_as_group`: a broker queue they compete
        on, one bus cursor); else its own (each Query replica's view takes every event)."""
        return self.service(name).subscription(name)

    def replicas(self, service: str) -> list[str]:
        """Every process of `service`: `[query, query.2, ...]`."""
        return [name for name in self.instances if service_of(name) == service]

    def cors_origins(self) -> list[str]:
        """The origins a browser may call Posts, Comments and Query from."""
        return list(self.cors) if self.cors is not None else [*self.page_origins(), *COURSE_CLIENT_ORIGINS]

    def db_path(self, service: str) -> Path:
        return self.data_dir / f"{service}.db"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"


def _url(host: str, hosts: Mapping[str, str], ports: Mapping[str, int], name: str) -> str:
    address = hosts.get(name) or ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host)
    return f"http://{address}:{ports[name]}"


def _port(env: dict[str, str], service: str, default: int, *, variable: str | None = None) -> int:
    name = variable or f"BLOG_{service.upper()}_PORT"
    raw = env.get(name)
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={raw!r} is outside 1-65535")
    return port


def _number(env: dict[str, str], name: str, default: float, kind: type = int, *, zero: bool = False) -> float:
    """A number above 0 (`zero`: or 0)."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < 0 or (value == 0 and not zero) or value != value:  # value != value: NaN
        raise ConfigError(f"{name}={raw!r} must be {'0 or more' if zero else 'above 0'}")
    return value


def _subscribers(env: dict[str, str], table: Sequence[Service], url: Callable[[str], str],
                 instances: Sequence[str]) -> tuple[Subscriber, ...]:
    """BLOG_SUBSCRIBERS: comma-separated `name=url` pairs, or process names (`url(name)`: where one
    listens). Unset: every process of every service but the bus itself, as the course's bus delivers.

    Processes that consume as one (`Config.subscription`: the replicas of a service sharing one store)
    are one subscriber, named as their service, with each process's address a member (any of them
    listed stands for the group); a name given with several URLs is such a group too."""
    groups = {service.name for service in table if service.consumes_as_group}
    members: dict[str, list[str]] = {}
    batch: dict[str, bool] = {}

    def add(name: str, address: str, batched: bool) -> None:
        if address not in members.setdefault(name, []):
            members[name].append(address)
        batch.setdefault(name, batched)

    def add_process(name: str) -> None:
        """`name`'s own subscriber, or its service's group with every replica a member."""
        service = service_of(name)
        if service in groups:
            for member in (other for other in instances if service_of(other) == service):
                add(service, url(member) + "/events", True)
        else:
            add(name, url(name) + "/events", True)

    raw = env.get("BLOG_SUBSCRIBERS")
    if raw is None:
        buses = {s.name for s in table if s.bus}
        for name in instances:
            if service_of(name) not in buses:
                add_process(name)
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        name, sep, address = (part.strip() for part in item.partition("="))
        if sep:
            add(name, address, False)
        elif name in instances:
            add_process(name)
        else:
            raise ConfigError(f"BLOG_SUBSCRIBERS: {name!r} is neither a service nor name=url")
    return tuple(Subscriber(name, urls[0], batch=batch[name], also=tuple(urls[1:])) for name, urls in members.items())


PUBLISH_INLINE = ("off", "before-answer", "after-answer")  # BLOG_PUBLISH_INLINE's values, the default first
ACCESS_LOG = ("writes", "all", "off")  # BLOG_ACCESS_LOG's values, the default first


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is neither 1 nor 0")


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (the first is the default), any case."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return allowed[0]
    if raw.strip().lower() not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw.strip().lower()


def _broker_addresses(raw: str) -> str | None:
    """BLOG_BROKER_URL: one address, or several (a cluster's nodes) separated by commas or semicolons,
    each of a scheme the transport registry knows."""
    addresses = [part.strip() for part in raw.replace(",", ";").split(";") if part.strip()]
    for address in addresses:
        if urlsplit(address).scheme.lower() not in transport_module.REGISTRY:
            known = ", ".join(f"{scheme}://" for scheme in transport_module.REGISTRY)
            raise ConfigError(f"BLOG_BROKER_URL: no transport for {address.split(':', 1)[0]!r} URLs (known: {known})")
    return ";".join(addresses) or None


def _database_url(raw: str | None) -> str | None:
    """BLOG_DATABASE_URL: a PostgreSQL URL (postgresql://user@host:port/dbname), or unset for SQLite."""
    if not raw or not raw.strip():
        return None
    if not raw.strip().lower().startswith(("postgresql://", "postgres://")):
        shown = raw.split("://")[0] + "://..." if "://" in raw else repr(raw)  # a URL's password is not repeated
        raise ConfigError(f"BLOG_DATABASE_URL={shown} is not a PostgreSQL URL "
                          "(postgresql://USER@HOST:PORT/DBNAME), and SQLite needs none")
    return raw.strip()


def _replicas(env: dict[str, str], table: Sequence[Service], *, shared_storage: bool = False) -> dict[str, int]:
    """BLOG_REPLICAS: `query=2` (comma-separated SERVICE=N) runs N processes of a service; a writer
    (one that emits through an outbox) only when `shared_storage` (its tables in PostgreSQL, which
    every replica reaches)."""
    counts = {}
    for item in filter(None, (part.strip() for part in env.get("BLOG_REPLICAS", "").split(","))):
        name, sep, count = (part.strip() for part in item.partition("="))
        if not sep or not count.isdigit() or not 1 <= int(count) <= 16:
            raise ConfigError(f"BLOG_REPLICAS: {item!r} is not SERVICE=N with N from 1 to 16")
        service = next((s for s in table if s.name == name), None)
        if service is None or not (service.replicable or service.emits):
            replicable = ", ".join(s.name for s in table if s.replicable or s.emits)
            raise ConfigError(f"BLOG_REPLICAS: {name!r} cannot run as replicas (only {replicable})")
        if not service.replicable and not shared_storage:
            raise ConfigError(f"BLOG_REPLICAS: {name!r} cannot run as replicas on SQLite (its data is one file): "
                              "replicas of the writers need PostgreSQL (--database postgresql://...)")
        counts[name] = int(count)
    return counts


def _instance_ports(env: dict[str, str], table: Sequence[Service], replicas: dict[str, int]) -> dict[str, int]:
    """Each process's port, in formation order: a service's own, then for its replica k
    BLOG_<SERVICE>_<k>_PORT, or REPLICA_PORT_STEP x (k - 1) above the service's."""
    ports = {}
    for declared in table:
        service = declared.name
        ports[service] = base = _port(env, service, declared.port)
        for k in range(2, replicas.get(service, 1) + 1):
            replica = f"{service}.{k}"
            ports[replica] = _port(env, service, base + REPLICA_PORT_STEP * (k - 1),
                                   variable=f"BLOG_{service.upper()}_{k}_PORT")
            clash = next((other for other, port in ports.items() if port == ports[replica] and other != replica), None)
            if clash:
                raise ConfigError(f"{replica} would listen on port {ports[replica]}, as {clash} does: "
                                  f"set BLOG_{service.upper()}_{k}_PORT to another port")
    return ports


def _origins(raw: str | None) -> tuple[str, ...] | None:
    """BLOG_CORS_ORIGINS: comma-separated origins (`http://host:port`), or `*` for any."""
    if raw is None:
        return None
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not (origin.startswith(("http://", "https://")) and "/" not in origin.split("://", 1)[1]):
            raise ConfigError(f"BLOG_CORS_ORIGINS: {origin!r} is not an origin such as http://localhost:3000 (or *)")
    return origins


def _split_words(value: Any) -> Any:
    """A comma-separated setting as its words, lower-cased (an empty setting is an empty list)."""
    if isinstance(value, str):
        return tuple(word.strip().lower() for word in value.split(",") if word.strip())
    return value


# A settings field holding words: `BLOG_MODERATION_REJECT=spam,eggs` is ("spam", "eggs").
Words = Annotated[tuple[str, ...], BeforeValidator(_split_words)]


def settings_variable(service: str, name: str) -> str:
    """The variable of field `name` of a service's own settings: BLOG_MODERATION_REJECT."""
    return f"BLOG_{service.upper()}_{name.upper()}"


def _own_settings(env: dict[str, str], service: Service) -> BaseModel:
    """A service's settings model, each field from its BLOG_<SERVICE>_<FIELD> when set."""
    model = service.settings
    given = {name: env[settings_variable(service.name, name)]
             for name in model.model_fields if settings_variable(service.name, name) in env}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        variable = settings_variable(service.name, str(exc.errors()[0]["loc"][0]))
        raise ConfigError(f"{variable}={env.get(variable)!r}: {describe(exc)}") from None


def load(env: Mapping[str, str] | None, table: Sequence[Service]) -> Config:
    """Read the configuration of the formation `table` lists from `env` (None: the process
    environment). `services.table.load(env)` passes the formation's own table."""
    env = dict(os.environ if env is None else env)
    database_url = _database_url(env.get("BLOG_DATABASE_URL"))
    replicas = _replicas(env, table, shared_storage=database_url is not None)
    ports = _instance_ports(env, table, replicas)
    instance = env.get("BLOG_INSTANCE") or None
    if instance is not None and instance not in ports:
        raise ConfigError(f"BLOG_INSTANCE={instance!r} is not a process of this formation ({', '.join(ports)})")
    host = env.get("BLOG_HOST", "127.0.0.1")
    hosts = {name: env[host_variable(name)] for name in ports if env.get(host_variable(name))}
    return Config(
        services=tuple(table),
        host=host,
        ports=ports,
        instances=tuple(ports),
        instance=instance,
        hosts=hosts,
        data_dir=Path(env.get("BLOG_DATA_DIR", ".blog")),
        subscribers=_subscribers(env, table, lambda name: _url(host, hosts, ports, name), tuple(ports)),
        secret=env.get("BLOG_SECRET") or None,
        delivery_attempts=int(_number(env, "BLOG_DELIVERY_ATTEMPTS", Config.delivery_attempts)),
        delivery_timeout=_number(env, "BLOG_DELIVERY_TIMEOUT", Config.delivery_timeout, float),
        idle_timeout=int(_number(env, "BLOG_IDLE_TIMEOUT", Config.idle_timeout)),
        fsync=_flag(env, "BLOG_FSYNC", Config.fsync),
        publish_inline=_choice(env, "BLOG_PUBLISH_INLINE", PUBLISH_INLINE),
        broker_url=_broker_addresses(env.get("BLOG_BROKER_URL", "")),
        broker_namespace=env.get("BLOG_BROKER_NAMESPACE") or Config.broker_namespace,
        cors=_origins(env.get("BLOG_CORS_ORIGINS")),
        settings={s.name: _own_settings(env, s) for s in table if s.settings is not None},
        tracing=env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true",  # only "true" disables, as the SDK reads it
        trace_rate=_number(env, "BLOG_TRACE_RATE", Config.trace_rate, float, zero=True),
        trace_sampler=env.get("OTEL_TRACES_SAMPLER") or None,
        otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        log_format=_choice(env, "BLOG_LOG_FORMAT", ("text", "json")),
        access_log=_choice(env, "BLOG_ACCESS_LOG", ACCESS_LOG),
        gateway=_flag(env, "BLOG_GATEWAY", Config.gateway),
        gateway_port=_port(env, "gateway", default=Config.gateway_port),
        database_url=database_url,
    )
