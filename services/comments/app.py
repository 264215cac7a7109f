"""Comments service (:4001): comments per post; each new comment emits CommentCreated via the outbox."""
from __future__ import annotations

from flask import Flask, jsonify

from services.shared import config as config_module
from services.shared import outbox, transport as transport_module
from services.shared.components import Closing, components
from services.shared.config import Config
from services.shared.consumer import register_consumer
from services.shared.db import writer_database
from services.shared.metrics import metrics_of
from services.shared.openapi import EVENTS_IN, Error, Operation, Param, register_openapi
from services.shared.schemas import Comment, NewComment
from services.shared.transport import Transport
from services.shared.web import ApiError, allow_origins, create_base_app, parse, register_health

from .store import HANDLERS, SCHEMA, CommentStore, UnknownPost

POST_ID = Param("post_id", "path", {"type": "string"})
OPERATIONS = [
    Operation("post", "/posts/{post_id}/comments", "Comment on a post", {201: list[Comment], 400: Error},
              body=NewComment, params=(POST_ID,)),
    Operation("get", "/posts/{post_id}/comments", "A post's comments, oldest first", {200: list[Comment]},
              params=(POST_ID,)),
    EVENTS_IN,
]


def create_app(config: Config | None = None, transport: Transport | None = None) -> Flask:
    config = config or config_module.load()
    transport = transport or transport_module.from_config(config, source="comments")
    db = writer_database(config, "comments", SCHEMA)  # SQLite, or PostgreSQL shared by its replicas
    store = CommentStore(db)
    app = create_base_app("comments", config)
    allow_origins(app, config)
    components(app).add("transport", Closing(transport))
    components(app).add("database", db.upkeep())
    relay = outbox.Relay(db, transport, published=metrics_of(app).published)
    catch_up = register_consumer(app, config.me("comments"), store, transport, HANDLERS, then=relay.notify)
    components(app).add("relay", relay)

    @app.post("/posts/<post_id>/comments")
    def create_comment(post_id: str):
        content = parse(NewComment).content
        try:
            comments = store.create(post_id, content)
        except UnknownPost:
            raise ApiError(404, f"post {post_id!r} is not known to the comments service") from None
        relay.notify()
        return jsonify(comments), 201

    @app.get("/posts/<post_id>/comments")
    def list_comments(post_id: str):
        return jsonify(store.for_post(post_id))

    def health() -> dict:
        posts, comments = store.count()
        return dict(
            known_posts=posts, comments=comments, outbox_pending=outbox.pending(db), relay_error=relay.last_error,
            applied_seq=store.applied_seq, **catch_up.health(),
        )

    register_health(app, "comments", health)
    register_openapi(app, "Comments service", OPERATIONS)
    return app
