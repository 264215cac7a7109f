"""Query service (:4002): the read model of posts with their comments, built from events alone.

Each replica (BLOG_REPLICAS=query=N) keeps its own view, rebuilt from the log if lost.
`open_view` opens a view on a file of one's own (blogctl's history replays the log into one).
"""
from pathlib import Path

from services.shared.db import Database
from services.shared.service import FrontRoute, Service

from .routes import routes
from .view import HANDLERS, SCHEMA, QueryView


def open_view(path: Path | str) -> QueryView:
    """A view in the SQLite file `path`, not fsynced (it is rebuilt from the log if lost)."""
    return QueryView(Database(path, SCHEMA, durable=False))


def _health(view: QueryView) -> dict:
    posts, comments = view.counts()
    return dict(posts=posts, comments=comments)


SERVICE = Service(
    "query", 4002, title="Query service", schema=SCHEMA, store=lambda db, config: QueryView(db),
    handlers=HANDLERS, routes=routes, health=_health, browser=True, page=True, replicable=True, delivered_first=True,
    # The view at /posts (every method Posts does not take there), and the page with anything else.
    front_door=(FrontRoute("= /posts", ingress="/posts"), FrontRoute("/", ingress="/?(.*)")),
)

__all__ = ["SERVICE", "QueryView", "open_view"]
