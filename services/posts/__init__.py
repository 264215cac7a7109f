"""Posts service (:4000): stores posts and emits PostCreated.

Posts handles no event type yet; it acknowledges every delivery, as the course's does.
"""
from services.shared.events import PostCreated
from services.shared.service import FrontRoute, Service

from .routes import routes
from .store import SCHEMA, PostStore

SERVICE = Service(
    "posts", 4000, title="Posts service", schema=SCHEMA, store=lambda db, config: PostStore(db),
    emits=(PostCreated,), routes=routes, health=lambda store: dict(posts=store.count()), browser=True,
    # The course's ingress route, and our clients' POST /posts (a GET there is Query's).
    front_door=(FrontRoute("= /posts/create", ingress="/posts/create"), FrontRoute("= /posts", methods=("POST",))),
)
