"""Query's routes: the blog page, and the view of every post with its comments (paged, long-polled).

It calls no other service while answering: with Posts and Comments dead, `GET /posts` still serves.
"""
from __future__ import annotations

import threading

from flask import Flask, Response, render_template, request

from services.shared.events import SEQ_MAX
from services.shared.openapi import Error, Operation, Param
from services.shared.schemas import PostWithComments
from services.shared.service import Built
from services.shared.web import GATEWAY_HEADER, int_arg

from .view import QueryView

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
]


def routes(app: Flask, built: Built[QueryView]) -> list[Operation]:
    config, view = built.config, built.store

    @app.get("/")
    def page():
        """The blog page: reads this service, writes through Posts and Comments (through the front
        door when it came through one, ours or an ingress: one origin, no ports)."""
        if request.headers.get(GATEWAY_HEADER) or request.headers.get("X-Forwarded-Host"):
            return render_template("index.html", posts_port="", comments_port="")
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

    return OPERATIONS
