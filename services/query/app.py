"""Query service (:4002): the posts-with-comments view, built from events alone.

It calls no other service while answering: with Posts and Comments dead, `GET /posts` still serves.
"""
from __future__ import annotations

import threading

from flask import Flask, Response, render_template, request

from services.shared import config as config_module
from services.shared import transport as transport_module
from services.shared.components import Closing, components
from services.shared.config import Config
from services.shared.consumer import register_consumer
from services.shared.db import Checkpointer, Database
from services.shared.events import SEQ_MAX
from services.shared.openapi import EVENTS_IN, Error, Operation, Param, register_openapi
from services.shared.schemas import PostWithComments
from services.shared.transport import Transport
from services.shared.web import allow_origins, create_base_app, int_arg, register_health

from .view import HANDLERS, SCHEMA, QueryView

WAIT_MAX = 30  # seconds a reader may wait for a change
WAITERS_MAX = 4  # of the 8 request threads: the rest always answer at once
PAGING = (
    Param("offset", "query", {"type": "integer", "minimum": 0, "maximum": SEQ_MAX}),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": SEQ_MAX}),
    Param("wait", "query", {"type": "integer", "minimum": 0, "maximum": WAIT_MAX}),
)
OPERATIONS = [
    Operation("get", "/", "The blog page (HTML)", {200: None}),
    Operation("get", "/posts", "Every post with its comments, in creation order; `limit`/`offset` page it;"
              " with `If-None-Match` and `wait`, held up to `wait` seconds until it changes",
              {200: dict[str, PostWithComments], 304: None, 400: Error}, params=PAGING),
    EVENTS_IN,
]


def create_app(config: Config | None = None, transport: Transport | None = None) -> Flask:
    config = config or config_module.load()
    transport = transport or transport_module.from_config(config, source="query")
    me = config.me("query")  # "query", or the replica this process is ("query.2"): its own database and subscription
    view = QueryView(Database(config.db_path(me), SCHEMA, durable=False))  # rebuilt from the log if lost
    app = create_base_app("query", config, import_name=__name__)
    allow_origins(app, config)
    components(app).add("transport", Closing(transport))
    components(app).add("checkpoints", Checkpointer(view.db))
    catch_up = register_consumer(app, me, view, transport, HANDLERS)

    @app.get("/")
    def page():
        """The blog page: reads this service, writes through Posts and Comments."""
        return render_template("index.html", posts_port=config.ports["posts"], comments_port=config.ports["comments"])

    waiters = threading.BoundedSemaphore(WAITERS_MAX)

    @app.get("/posts")
    def list_posts():
        offset = int_arg("offset", 0, 0)
        limit = int_arg("limit", None, 1)
        wait = int_arg("wait", 0, 0, WAIT_MAX)
        rendering = view.render(offset, limit)
        known = request.headers.get("If-None-Match", "")
        # A long poll: a reader holding the current page waits for the next change, not a timer.
        # Only a few wait at once, so waiting readers can never take every request thread.
        if wait and f'"{rendering.etag}"' in known and waiters.acquire(blocking=False):
            try:
                rendering = view.render_changed(offset, limit, rendering, wait)
            finally:
                waiters.release()
        etag = f'"{rendering.etag}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Total-Count": str(rendering.total)}
        if limit is not None and offset + limit < rendering.total:
            headers["Link"] = f'</posts?offset={offset + limit}&limit={limit}>; rel="next"'
        if etag in known:
            return Response(status=304, headers=headers)
        return Response(rendering.body, mimetype="application/json", headers=headers)

    def health() -> dict:
        posts, comments = view.counts()
        return dict(applied_seq=view.applied_seq, posts=posts, comments=comments, **catch_up.health())

    register_health(app, "query", health)
    register_openapi(app, "Query service", OPERATIONS)
    return app
