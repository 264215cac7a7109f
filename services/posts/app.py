"""Posts service (:4000): create and list posts; each new post emits PostCreated through the outbox."""
from __future__ import annotations

from flask import Flask, jsonify

from services.shared import config as config_module
from services.shared import outbox, transport as transport_module
from services.shared.components import Closing, components
from services.shared.config import Config
from services.shared.db import writer_database
from services.shared.metrics import metrics_of
from services.shared.openapi import EVENTS_IN, Error, Operation, register_openapi
from services.shared.schemas import NewPost, Post
from services.shared.transport import Transport
from services.shared.web import allow_origins, create_base_app, events_blueprint, parse, register_health

from .store import SCHEMA, PostStore

OPERATIONS = [
    Operation("post", "/posts", "Create a post", {201: Post, 400: Error}, body=NewPost),
    Operation("get", "/posts", "Every post, keyed by id", {200: dict[str, Post]}),
    EVENTS_IN,
]


def create_app(config: Config | None = None, transport: Transport | None = None) -> Flask:
    config = config or config_module.load()
    transport = transport or transport_module.from_config(config, source="posts")
    db = writer_database(config, "posts", SCHEMA)  # SQLite, or PostgreSQL shared by its replicas
    store = PostStore(db)
    app = create_base_app("posts", config)
    allow_origins(app, config)
    components(app).add("transport", Closing(transport))
    components(app).add("database", db.upkeep())
    relay = components(app).add("relay", outbox.Relay(db, transport, published=metrics_of(app).published))  # tests drive relay.relay_once()

    @app.post("/posts")
    def create_post():
        post = store.create(parse(NewPost).title)
        relay.notify()
        return jsonify(post), 201

    @app.get("/posts")
    def list_posts():
        return jsonify(store.all())

    register_health(app, "posts", lambda: dict(
        posts=store.count(), outbox_pending=outbox.pending(db), relay_error=relay.last_error,
    ))

    # Posts handles no event type yet; it acknowledges every delivery, as the course's does.
    app.register_blueprint(events_blueprint(lambda events: None))
    register_openapi(app, "Posts service", OPERATIONS)
    return app
