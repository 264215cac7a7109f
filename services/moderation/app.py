"""Moderation service (:4003): consumes CommentCreated, decides, emits CommentModerated through its outbox.

It has no routes of its own besides `POST /events`: the bus (or its broker queue) brings it
every new comment, and its catch-up reads the log for any it missed while it was down or
before it first started.
"""
from __future__ import annotations

from flask import Flask

from services.shared import config as config_module
from services.shared import outbox, transport as transport_module
from services.shared.components import Closing, components
from services.shared.config import Config
from services.shared.consumer import register_consumer
from services.shared.db import writer_database
from services.shared.metrics import metrics_of
from services.shared.openapi import EVENTS_IN, register_openapi
from services.shared.transport import Transport
from services.shared.web import create_base_app, register_health

from .store import HANDLERS, SCHEMA, ModerationStore, Rule


def create_app(config: Config | None = None, transport: Transport | None = None) -> Flask:
    config = config or config_module.load()
    transport = transport or transport_module.from_config(config, source="moderation")
    db = writer_database(config, "moderation", SCHEMA)  # SQLite, or PostgreSQL shared by its replicas
    store = ModerationStore(db, Rule(config.moderation_reject))
    app = create_base_app("moderation", config)
    components(app).add("transport", Closing(transport))
    components(app).add("database", db.upkeep())
    relay = outbox.Relay(db, transport, published=metrics_of(app).published)
    catch_up = register_consumer(app, config.me("moderation"), store, transport, HANDLERS, then=relay.notify)
    components(app).add("relay", relay)

    register_health(app, "moderation", lambda: dict(
        decided=store.decided(), rejected_words=list(store.rule.words), outbox_pending=outbox.pending(db),
        relay_error=relay.last_error, applied_seq=store.applied_seq, **catch_up.health(),
    ))
    register_openapi(app, "Moderation service", [EVENTS_IN])
    return app
