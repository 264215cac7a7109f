"""The service table: which services the formation runs, one line each, in start order.

Everything that needs the list of services reads it here: the configuration (ports, the bus's
subscribers, which may have replicas, each service's own settings), the broker's queues,
blogctl's service list and the Procfile check. A service is its package, which exports its
declaration (`SERVICE`, services/shared/service.py), plus one line below and one in the Procfile.

This module sits above the service packages (it imports them); nothing a service package
imports may import it back, which is why `services.shared.config.load` takes the table as an
argument and `load()` here passes this one.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Flask

from services import bus, comments, moderation, posts, query
from services.shared import config as config_module
from services.shared.config import Config
from services.shared.service import Service, build_service
from services.shared.transport import Transport

SERVICE_TABLE: tuple[Service, ...] = (
    posts.SERVICE,
    comments.SERVICE,
    query.SERVICE,
    moderation.SERVICE,
    bus.SERVICE,
)
SERVICES = tuple(service.name for service in SERVICE_TABLE)
DEFAULT_PORTS = {service.name: service.port for service in SERVICE_TABLE}
# Who the bus delivers to, unless BLOG_SUBSCRIBERS says otherwise: every service but itself, as the course's bus does.
DEFAULT_SUBSCRIBERS = tuple(service.name for service in SERVICE_TABLE if not service.bus)
# The services that handle events: each has its own queue on a broker (one for all its replicas, unless `replicable`).
CONSUMERS = tuple(service.name for service in SERVICE_TABLE if service.handlers)
# The writers' schemas in PostgreSQL, one per service that emits (services/shared/postgres.py).
WRITER_SCHEMAS = tuple(service.name for service in SERVICE_TABLE if service.emits)

_BY_NAME = {service.name: service for service in SERVICE_TABLE}


def spec(name: str) -> Service:
    """The table's declaration of `name` (KeyError for a name that is not a service)."""
    return _BY_NAME[name]


def load(env: Mapping[str, str] | None = None) -> Config:
    """The configuration of this formation, read from `env` (default: the process environment)."""
    return config_module.load(env, SERVICE_TABLE)


def app_factory(service: Service) -> Callable[..., Flask]:
    """`create_app(config=None, transport=None)` for `service`: its declaration, built; the
    configuration defaults to the environment's."""

    def create_app(config: Config | None = None, transport: Transport | None = None) -> Flask:
        return build_service(service, config or load(), transport)

    create_app.__doc__ = f"The {service.name} service's app (`build_service` over its declaration)."
    return create_app
